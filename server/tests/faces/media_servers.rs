//! Media servers told about changes (docs/media-servers.md), against a real node and two local
//! HTTP servers that play Jellyfin and Plex. Each checks every request exactly as the server's
//! API documents it (method, path, query, headers, body; Jellyfin's body as its
//! `MediaUpdateInfoDto`) and records it; a request that does not match is answered 400 and
//! fails the test.
//!
//! Files put through the CLI, WebDAV and a drop folder reach both servers as one request per
//! folder batch (several files, one folder named), mapped by the longest `path_map` folder;
//! changes outside the map send nothing; a delete is `Deleted`, a move a `Deleted` and a
//! `Created`; a 503 is retried; a 401 is given up at once and shown by `wormfs status`; a token
//! file others can read stops the node at start; `wormfs notify test` reports each server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::common::dav::Dav;
use crate::common::process::{free_port, wait_for, Server, BIN};

const JELLYFIN_TOKEN: &str = "0123456789abcdef0123456789abcdef";
const PLEX_TOKEN: &str = "plexTok-42_x";

/// One request a fake server received.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    /// The query's pairs, percent-decoded.
    query: Vec<(String, String)>,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        let mut found = self.headers.iter().filter(|(k, _)| k == name);
        let first = found.next().map(|(_, v)| v.as_str());
        // A header sent twice is a mistake in itself.
        if found.next().is_some() {
            return Some("(sent twice)");
        }
        first
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space); `None` if malformed.
fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c if c.is_ascii_alphanumeric() || b"-._~*".contains(&c) => out.push(c),
            // Anything else must have been encoded.
            _ => return None,
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Checks a request: `Err` says what is wrong with it.
type Check = Box<dyn Fn(&Req) -> Result<(), String> + Send>;
/// Answers a (checked) request: status and JSON body.
type Answer = Box<dyn FnMut(&Req) -> (u16, String) + Send>;

/// A local HTTP server on 127.0.0.1 that checks, records and answers every request.
struct Fake {
    port: u16,
    reqs: Arc<Mutex<Vec<Req>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn start(check: Check, mut answer: Answer) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let reqs: Arc<Mutex<Vec<Req>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (kept, errs) = (reqs.clone(), errors.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                let Some(req) = read_request(&mut s) else {
                    continue;
                };
                let (status, body) = match check(&req) {
                    Ok(()) => answer(&req),
                    Err(e) => {
                        errs.lock()
                            .unwrap()
                            .push(format!("{} {}: {e}", req.method, req.path));
                        (400, "{}".to_owned())
                    }
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                kept.lock().unwrap().push(req);
            }
        });
        Fake { port, reqs, errors }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn reqs(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }

    /// The requests to `method path`.
    fn to(&self, method: &str, path: &str) -> Vec<Req> {
        self.reqs()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    fn assert_no_errors(&self) {
        let errors = self.errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "requests not as documented: {errors:#?}");
    }
}

/// Reads one HTTP/1.1 request (a body by Content-Length; WormFS's client sends no chunked
/// bodies, and one would be refused here).
fn read_request(s: &mut std::net::TcpStream) -> Option<Req> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        let (k, v) = h.trim_end().split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
        if k == "content-length" {
            len = v.parse().ok()?;
        }
        headers.push((k, v));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let query = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                form_decode(k).unwrap_or_else(|| format!("(bad encoding: {k})")),
                form_decode(v).unwrap_or_else(|| format!("(bad encoding: {v})")),
            )
        })
        .collect();
    let _ = version;
    Some(Req {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Jellyfin's API as `Jellyfin.Api/Controllers/LibraryController.cs` and the OpenAPI-generated
/// client (`jellyfin-api-client` 11.0.0: `post_updated_media.py`, `MediaUpdateInfoDto`,
/// `MediaUpdateInfoPathDto`; `get_system_info.py`) have it, with the
/// `Authorization: MediaBrowser Token="..."` scheme Jellyfin 12 requires.
fn jellyfin_check(req: &Req) -> Result<(), String> {
    let auth = format!("MediaBrowser Token=\"{JELLYFIN_TOKEN}\"");
    if req.header("authorization") != Some(auth.as_str()) {
        return Err(format!(
            "authorization is {:?}",
            req.header("authorization")
        ));
    }
    if req.header("x-emby-token").is_some() || !req.query.is_empty() {
        return Err("a legacy token header or a query (api_key) was sent".into());
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/Library/Media/Updated") => {
            if req.header("content-type") != Some("application/json") {
                return Err(format!("content-type {:?}", req.header("content-type")));
            }
            let v: Value = serde_json::from_str(&req.body).map_err(|e| e.to_string())?;
            let obj = v.as_object().ok_or("the body is not an object")?;
            if obj.keys().collect::<Vec<_>>() != ["Updates"] {
                return Err(format!("the body's keys are {:?}", obj.keys()));
            }
            let updates = obj["Updates"].as_array().ok_or("Updates is not an array")?;
            if updates.is_empty() {
                return Err("no update".into());
            }
            for u in updates {
                let u = u.as_object().ok_or("an update is not an object")?;
                let mut keys: Vec<&String> = u.keys().collect();
                keys.sort();
                if keys != ["Path", "UpdateType"] {
                    return Err(format!("an update's keys are {keys:?}"));
                }
                let path = u["Path"].as_str().ok_or("Path is not a string")?;
                if !path.starts_with('/') {
                    return Err(format!("Path {path:?}"));
                }
                let kind = u["UpdateType"].as_str().ok_or("UpdateType not a string")?;
                if !["Created", "Modified", "Deleted"].contains(&kind) {
                    return Err(format!("UpdateType {kind:?}"));
                }
            }
            Ok(())
        }
        ("GET", "/System/Info") if req.body.is_empty() => Ok(()),
        _ => Err("not an endpoint WormFS should call".into()),
    }
}

/// Plex's libraries: `/data/films` is section 3, `/data/tv` section 7.
fn plex_sections() -> String {
    json!({"MediaContainer": {"size": 2, "allowSync": false, "title1": "Plex Library",
    "Directory": [
        {"allowSync": true, "key": "3", "type": "movie", "title": "Films",
         "agent": "tv.plex.agents.movie", "Location": [{"id": 1, "path": "/data/films"}]},
        {"allowSync": true, "key": "7", "type": "show", "title": "TV",
         "agent": "tv.plex.agents.series", "Location": [{"id": 2, "path": "/data/tv"}]}
    ]}})
    .to_string()
}

/// Plex's API as autoscan's Plex target and Plex's support article 201638786 use it.
fn plex_check(req: &Req) -> Result<(), String> {
    if req.header("x-plex-token") != Some(PLEX_TOKEN) {
        return Err(format!("x-plex-token is {:?}", req.header("x-plex-token")));
    }
    if req.method != "GET" || !req.body.is_empty() {
        return Err("not a GET without a body".into());
    }
    match req.path.as_str() {
        "/library/sections" => {
            if req.header("accept") != Some("application/json") || !req.query.is_empty() {
                return Err(format!(
                    "accept {:?}, query {:?}",
                    req.header("accept"),
                    req.query
                ));
            }
            Ok(())
        }
        "/library/sections/3/refresh" | "/library/sections/7/refresh" => {
            match req.query.as_slice() {
                [(k, v)] if k == "path" && v.starts_with("/data/") => Ok(()),
                q => Err(format!("query {q:?}")),
            }
        }
        _ => Err("not an endpoint WormFS should call".into()),
    }
}

/// A Jellyfin that answers `updated` for each `POST /Library/Media/Updated` in turn (204 once
/// they run out) and its system info.
fn jellyfin(updated: Vec<u16>) -> Fake {
    let mut left = updated.into_iter();
    Fake::start(
        Box::new(jellyfin_check),
        Box::new(move |req| match req.path.as_str() {
            "/System/Info" => (
                200,
                json!({"ServerName": "den", "Version": "10.11.0", "Id": "abc"}).to_string(),
            ),
            _ => (left.next().unwrap_or(204), String::new()),
        }),
    )
}

/// A Plex that answers every request `status` (200: its sections, and refreshes).
fn plex(status: u16) -> Fake {
    Fake::start(
        Box::new(plex_check),
        Box::new(move |req| match (status, req.path.as_str()) {
            (200, "/library/sections") => (200, plex_sections()),
            (200, _) => (200, String::new()),
            (s, _) => (s, "{}".to_owned()),
        }),
    )
}

/// Writes a secret file as the node wants it (mode 0600).
fn secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A config with a drop folder `drop` -> `/Films` and both media servers, 2 s apart.
fn config(dir: &Path, jf: &Fake, px: &Fake) -> PathBuf {
    secret(&dir.join("jellyfin-token"), &format!("{JELLYFIN_TOKEN}\n"));
    secret(&dir.join("plex-token"), PLEX_TOKEN);
    std::fs::create_dir_all(dir.join("drop")).unwrap();
    let path = dir.join("wormfs.toml");
    std::fs::write(
        &path,
        format!(
            r#"[[ingest.folders]]
path = "drop"
tree = "/Films"
settle_ms = 300

[[media_servers]]
kind = "jellyfin"
url = "{jf}/"
token_file = "jellyfin-token"
path_map = {{ "/Films" = "/media/films", "/Films/Kids" = "/kids" }}
notify_delay_ms = 2000

[[media_servers]]
kind = "plex"
url = "{px}"
token_file = "plex-token"
path_map = {{ "/Films" = "/data/films", "/Music" = "/data/music" }}
notify_delay_ms = 2000
"#,
            jf = jf.url(),
            px = px.url(),
        ),
    )
    .unwrap();
    path
}

fn start(dir: &Path, cfg: &Path) -> Server {
    Server::start_env(
        dir,
        free_port(),
        &["--config", cfg.to_str().unwrap()],
        &[("WORMFS_STORAGE__RESERVE_FREE_BYTES", "0")],
    )
}

/// Jellyfin's `Updates` of every `POST /Library/Media/Updated` so far, as (Path, UpdateType).
fn jellyfin_batches(jf: &Fake) -> Vec<Vec<(String, String)>> {
    jf.to("POST", "/Library/Media/Updated")
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(&r.body).unwrap();
            v["Updates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| {
                    (
                        u["Path"].as_str().unwrap().to_owned(),
                        u["UpdateType"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

/// Plex's refreshes so far, as (section, path).
fn plex_refreshes(px: &Fake) -> Vec<(String, String)> {
    px.reqs()
        .iter()
        .filter(|r| r.path.ends_with("/refresh"))
        .map(|r| {
            let section = r.path.split('/').nth(3).unwrap().to_owned();
            (section, r.query[0].1.clone())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// Waits until Jellyfin got `n` batches and Plex `refreshes` refreshes, then checks both lists
/// whole (so a batch split in two, or a change sent that should not be, fails here or at the
/// next phase).
fn expect(jf: &Fake, px: &Fake, batches: &[Vec<(String, String)>], refreshes: &[(String, String)]) {
    wait_for(60, "the media servers' requests", || {
        (jellyfin_batches(jf).len() >= batches.len() && plex_refreshes(px).len() >= refreshes.len())
            .then_some(())
    });
    jf.assert_no_errors();
    px.assert_no_errors();
    assert_eq!(jellyfin_batches(jf), batches);
    let (mut got, mut want) = (plex_refreshes(px), refreshes.to_vec());
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn changes_through_every_face_reach_jellyfin_and_plex_batched_by_folder_through_the_path_map() {
    let t = tempfile::tempdir().unwrap();
    let (jf, px) = (jellyfin(vec![]), plex(200));
    let cfg = config(t.path(), &jf, &px);
    let s = start(t.path(), &cfg);
    // The folders exist before the files come (an empty new folder is no news).
    s.ok(&["mkdir", "-p", "/Films"]);
    s.ok(&["mkdir", "-p", "/Music"]);

    // Phase 1: a season through the CLI (three files, one folder), and a file outside both
    // maps (/Other) and one in Plex's map only (/Music).
    let season = t.path().join("Season 1");
    std::fs::create_dir_all(&season).unwrap();
    for n in 1..=3 {
        std::fs::write(season.join(format!("e{n}.mkv")), vec![n as u8; 20_000]).unwrap();
    }
    let other = t.path().join("other.bin");
    std::fs::write(&other, b"not media").unwrap();
    s.ok(&["put", other.to_str().unwrap(), "/Other/x.bin"]);
    s.ok(&["put", season.to_str().unwrap(), "/Films/Show/Season 1"]);
    s.ok(&["put", other.to_str().unwrap(), "/Music/Album/t.flac"]);
    let mut batches = vec![pairs(&[("/media/films/Show/Season 1", "Created")])];
    let mut refreshes = pairs(&[
        ("3", "/data/films/Show/Season 1"),
        ("3", "/data/music/Album"),
    ]);
    // /data/music is in no Plex library: it is skipped (and logged), not sent.
    refreshes.retain(|(_, p)| !p.starts_with("/data/music"));
    expect(&jf, &px, &batches, &refreshes);

    // Phase 2: WebDAV: a folder made, two files PUT into it; the longest map entry wins.
    let dav = Dav::of(&s);
    assert_eq!(dav.curl(&["-X", "MKCOL"], "/Films/Kids/").status, 201);
    assert_eq!(
        dav.curl(&["-X", "MKCOL"], "/Films/Kids/Film%20A/").status,
        201
    );
    for name in ["a.mkv", "a.en.srt"] {
        let answer = dav.curl(
            &["-T", other.to_str().unwrap()],
            &format!("/Films/Kids/Film%20A/{name}"),
        );
        assert!(matches!(answer.status, 201 | 204), "{}", answer.status);
    }
    batches.push(pairs(&[("/kids/Film A", "Created")]));
    refreshes.push(("3".into(), "/data/films/Kids/Film A".into()));
    expect(&jf, &px, &batches, &refreshes);

    // Phase 3: a drop folder: two files of one film.
    let film = t.path().join("drop/Dropped (2024)");
    std::fs::create_dir_all(&film).unwrap();
    std::fs::write(film.join("film.mkv"), vec![7u8; 50_000]).unwrap();
    std::fs::write(film.join("poster.jpg"), vec![8u8; 5_000]).unwrap();
    batches.push(pairs(&[("/media/films/Dropped (2024)", "Created")]));
    refreshes.push(("3".into(), "/data/films/Dropped (2024)".into()));
    expect(&jf, &px, &batches, &refreshes);

    // Phase 4: a delete is Deleted, for the folder that held the file.
    s.ok(&["rm", "/Films/Show/Season 1/e2.mkv"]);
    batches.push(pairs(&[("/media/films/Show/Season 1", "Deleted")]));
    refreshes.push(("3".into(), "/data/films/Show/Season 1".into()));
    expect(&jf, &px, &batches, &refreshes);

    // Phase 5: a move is Deleted for the old folder and Created for the new one.
    s.ok(&["mv", "/Films/Dropped (2024)", "/Films/Kids/Dropped (2024)"]);
    batches.push(pairs(&[
        ("/kids/Dropped (2024)", "Created"),
        ("/media/films", "Deleted"),
    ]));
    refreshes.push(("3".into(), "/data/films".into()));
    refreshes.push(("3".into(), "/data/films/Kids/Dropped (2024)".into()));
    expect(&jf, &px, &batches, &refreshes);

    // The status shows each server's last notification.
    let status = s.json(&["status"]);
    let servers = status["media_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{status}");
    assert_eq!(servers[0]["kind"], "jellyfin");
    assert_eq!(servers[0]["url"], jf.url());
    assert_eq!(servers[0]["last"]["outcome"], "sent");
    assert_eq!(
        servers[0]["last"]["folders"],
        json!(["/kids/Dropped (2024)", "/media/films"])
    );
    assert_eq!(servers[1]["kind"], "plex");
    assert_eq!(servers[1]["last"]["outcome"], "sent");
    assert_eq!(servers[1]["last"]["attempts"], 3, "{status}");
    let text = s.ok(&["status"]);
    assert!(
        text.contains(&format!("media:    jellyfin {}: last ", jf.url()))
            && text.contains("sent, 2 folder(s) [/kids/Dropped (2024), /media/films]"),
        "{text}"
    );

    // `wormfs notify test`: one harmless request to each, both fine.
    let out = s.ok(&["notify", "test"]);
    assert!(
        out.contains(&format!(
            "jellyfin {}: ok (200): Jellyfin \"den\", version 10.11.0",
            jf.url()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "plex {}: ok (200): Plex answered with 2 library section(s)",
            px.url()
        )) && out.contains("\"Films\" (/data/films)")
            && out.contains("/Music -> /data/music"),
        "{out}"
    );
    assert_eq!(jf.to("GET", "/System/Info").len(), 1);
    jf.assert_no_errors();
    px.assert_no_errors();
}

#[test]
fn a_503_is_retried_a_401_is_given_up_and_shown_and_an_open_token_file_stops_the_start() {
    let t = tempfile::tempdir().unwrap();
    let (jf, px) = (jellyfin(vec![503]), plex(401));
    let cfg = config(t.path(), &jf, &px);

    // A token file others can read: the node does not start, and says which entry and file.
    {
        use std::os::unix::fs::PermissionsExt;
        let token = t.path().join("plex-token");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = std::process::Command::new(BIN)
            .args(["serve", "--config", cfg.to_str().unwrap(), "--mdns", "off"])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--webdav-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--peer-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--data-listen", &format!("127.0.0.1:{}", free_port())])
            .current_dir(t.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(
            err.contains("media_servers[2]")
                && err.contains("chmod 600")
                && err.contains("plex-token"),
            "{err}"
        );
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let s = start(t.path(), &cfg);
    let film = t.path().join("film.mkv");
    std::fs::write(&film, vec![1u8; 30_000]).unwrap();
    s.ok(&["put", film.to_str().unwrap(), "/Films/A (2024)/film.mkv"]);

    // Jellyfin: 503, then the same batch again, taken.
    wait_for(60, "jellyfin's retry", || {
        (jf.to("POST", "/Library/Media/Updated").len() >= 2).then_some(())
    });
    let posts = jf.to("POST", "/Library/Media/Updated");
    assert_eq!(posts[0].body, posts[1].body);
    assert_eq!(
        jellyfin_batches(&jf)[1],
        pairs(&[("/media/films/A (2024)", "Created")])
    );
    // Plex: a 401 is not retried; the status says refused.
    let status = wait_for(60, "both results in the status", || {
        let v = s.json(&["status"]);
        let done = v["media_servers"]
            .as_array()?
            .iter()
            .all(|m| m["last"].is_object());
        done.then_some(v)
    });
    let (j, p) = (&status["media_servers"][0], &status["media_servers"][1]);
    assert_eq!(j["last"]["outcome"], "sent", "{status}");
    assert_eq!(j["last"]["attempts"], 2, "{status}");
    assert_eq!(p["last"]["outcome"], "refused", "{status}");
    assert_eq!(p["last"]["attempts"], 1, "{status}");
    assert!(
        p["last"]["message"].as_str().unwrap().contains("401"),
        "{status}"
    );
    assert_eq!(p["last"]["folders"], json!(["/data/films/A (2024)"]));
    assert_eq!(px.reqs().len(), 1, "{:?}", px.reqs());
    assert_eq!(jf.to("POST", "/Library/Media/Updated").len(), 2);
    let text = s.ok(&["status"]);
    assert!(
        text.contains(&format!("media:    plex {}: last ", px.url()))
            && text.contains("REFUSED (fix the token file)"),
        "{text}"
    );
    // The log says it loudly, with the file to fix.
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains(&px.url())
            && l.contains("plex-token")
            && l.contains("401")),
        "{log}"
    );

    // `wormfs notify test`: Jellyfin fine, Plex refused: exit 1, each said.
    let o = s.cli(&["notify", "test"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        out.contains(&format!("jellyfin {}: ok (200)", jf.url())),
        "{out}"
    );
    assert!(
        out.contains(&format!("plex {}: FAILED (401): answered 401", px.url())),
        "{out}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 of 2 media server(s) failed"));
    jf.assert_no_errors();
    px.assert_no_errors();
}
