//! Events, alerts and the health check against a real node: a byte flipped in a part is found
//! by scrub, recorded as an event, and alerted once (after the debounce) to three local
//! receivers in WormFS's JSON, ntfy's and Gotify's shapes, each with its token and only at the
//! severities it asked for; a receiver that fails gets the message again; the repair ends both
//! conditions and each is sent as resolved. `wormfs healthcheck` and `GET /api/v1/health`
//! say healthy, degraded and down along the way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::common::process::{files_under, free_port, wait_for, Server, BIN};
use crate::common::receiver::{Hit, Receiver};

fn config(dir: &Path, r: &Receiver) -> PathBuf {
    std::fs::write(dir.join("ntfy-token"), "tk_ntfy\n").unwrap();
    std::fs::write(dir.join("gotify-token"), "gotify-app-key").unwrap();
    let path = dir.join("wormfs.toml");
    std::fs::write(
        &path,
        format!(
            r#"[scrub]
enabled = true

[alerts]
debounce_ms = 400

[[alerts.webhooks]]
url = "{json}"

[[alerts.webhooks]]
url = "{ntfy}"
format = "ntfy"
token_file = "ntfy-token"

[[alerts.webhooks]]
url = "{gotify}"
format = "gotify"
token_file = "gotify-token"
min_severity = "critical"
"#,
            json = r.url("/json"),
            ntfy = r.url("/ntfy"),
            gotify = r.url("/gotify"),
        ),
    )
    .unwrap();
    path
}

/// `wormfs healthcheck` against `url`: its exit code and first line.
fn healthcheck(url: &str) -> (i32, String) {
    let o = std::process::Command::new(BIN)
        .args(["--node", url, "healthcheck", "--timeout", "5"])
        .env_remove("WORMFS_TOKEN")
        .env_remove("WORMFS_DATA_DIR")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).trim().to_owned(),
    )
}

/// Firing or resolved messages of `kind` a receiver got on `path`, by the JSON body's fields
/// or ntfy's title.
fn messages<'a>(hits: &'a [Hit], status: &str, kind: &str) -> Vec<&'a Hit> {
    hits.iter()
        .filter(|h| h.answered == 200)
        .filter(|h| match h.path.as_str() {
            "/json" => h.json()["status"] == status && h.json()["kind"] == kind,
            "/ntfy" => {
                let title = h.header("title").unwrap_or("");
                let resolved = title.contains("Resolved:");
                (status == "resolved") == resolved
                    && !title.contains("Test message")
                    && match kind {
                        "corruption" => title.contains("damaged part"),
                        _ => title.contains("can survive no more failures"),
                    }
            }
            _ => {
                let title = h.json()["title"].as_str().unwrap_or("").to_owned();
                (status == "resolved") == title.contains("Resolved:")
                    && match kind {
                        "corruption" => title.contains("damaged part"),
                        _ => title.contains("can survive no more failures"),
                    }
            }
        })
        .collect()
}

fn flip_a_byte(part: &Path) {
    let mut bytes = std::fs::read(part).unwrap();
    let at = 4096 + (bytes.len() - 4096) / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(part, &bytes).unwrap();
}

#[test]
fn corruption_is_an_event_and_an_alert_sent_once_resolved_once_and_health_follows() {
    let t = tempfile::tempdir().unwrap();
    // The first firing message to the JSON receiver is refused: it must come again.
    let refused_once = Arc::new(AtomicBool::new(false));
    let flag = refused_once.clone();
    let r = Receiver::start(Box::new(move |path, body| {
        (path == "/json" && body.contains("\"firing\"") && !flag.swap(true, Ordering::SeqCst))
            .then_some(503)
    }));
    let cfg = config(t.path(), &r);
    let disks: Vec<PathBuf> = (0..3).map(|i| t.path().join(format!("d{i}"))).collect();
    let mut args = vec!["--config".to_owned(), cfg.display().to_string()];
    for d in &disks {
        args.push("--disk".into());
        args.push(d.display().to_string());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start_env(
        t.path(),
        free_port(),
        &a,
        &[
            ("WORMFS_STORAGE__RESERVE_FREE_BYTES", "0"),
            ("WORMFS_REPAIR__TRANQUILITY", "0"),
            ("WORMFS_REPAIR__RETRY_MIN_MS", "300"),
        ],
    );
    let film = t.path().join("film.bin");
    std::fs::write(&film, crate::common::random_bytes(300_000, 7)).unwrap();
    s.ok(&[
        "put",
        film.to_str().unwrap(),
        "/film.mkv",
        "--policy",
        "copies:2",
    ]);
    wait_for(30, "healthcheck: healthy", || {
        let (code, out) = healthcheck(&s.url);
        (code == 0 && out == "healthy").then_some(())
    });

    // A test message reaches every receiver in its shape, with its token.
    let o = s.cli(&["alerts", "test"]);
    assert!(o.status.success(), "{o:?}");
    let hits = r.hits();
    assert_eq!(hits.len(), 3, "{hits:#?}");
    let json = &r.to("/json")[0];
    assert_eq!(json.json()["status"], "test");
    assert_eq!(json.json()["wormfs_alert"], 1);
    let ntfy = &r.to("/ntfy")[0];
    assert_eq!(ntfy.header("authorization"), Some("Bearer tk_ntfy"));
    assert!(
        ntfy.header("title").unwrap().contains("Test message"),
        "{ntfy:?}"
    );
    assert!(ntfy.header("priority").is_some() && ntfy.header("tags").is_some());
    let gotify = &r.to("/gotify")[0];
    assert_eq!(gotify.header("x-gotify-key"), Some("gotify-app-key"));
    assert!(gotify.json()["priority"].as_u64().is_some(), "{gotify:?}");
    assert!(gotify.json()["message"]
        .as_str()
        .unwrap()
        .contains("can send alerts"));

    // Repair waits; one copy of the film goes bad; scrub finds it.
    s.ok(&["repair", "pause"]);
    let parts: Vec<PathBuf> = disks
        .iter()
        .flat_map(|d| files_under(&d.join("parts")))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(parts.len(), 2, "{parts:?}");
    flip_a_byte(&parts[0]);
    s.ok(&["scrub", "now"]);
    let alerts = wait_for(60, "both conditions listed by wormfs alerts", || {
        let v = s.json(&["alerts"]);
        let kinds: Vec<String> = v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["kind"].as_str().unwrap().to_owned())
            .collect();
        (kinds.contains(&"corruption".to_owned()) && kinds.contains(&"files_at_risk".to_owned()))
            .then_some(v)
    });
    assert_eq!(alerts["alerts"][0]["severity"], "critical", "{alerts:#}");

    // Sent once each after the debounce; the refused JSON message came again.
    wait_for(60, "the firing messages", || {
        let hits = r.hits();
        (messages(&hits, "firing", "corruption").len() == 2
            && messages(&hits, "firing", "files_at_risk").len() == 3)
            .then_some(())
    });
    let json_firing: Vec<Hit> = r
        .to("/json")
        .into_iter()
        .filter(|h| h.json()["status"] == "firing")
        .collect();
    assert!(
        json_firing.iter().any(|h| h.answered == 503),
        "the first was refused: {json_firing:#?}"
    );
    let fired = messages(&r.hits(), "firing", "files_at_risk")
        .into_iter()
        .find(|h| h.path == "/json")
        .unwrap()
        .json();
    assert_eq!(fired["severity"], "critical");
    assert!(
        fired["message"].as_str().unwrap().contains("/film.mkv"),
        "{fired:#}"
    );
    let ntfy = messages(&r.hits(), "firing", "files_at_risk")
        .into_iter()
        .find(|h| h.path == "/ntfy")
        .unwrap()
        .clone();
    assert_eq!(ntfy.header("priority"), Some("5"));
    assert!(ntfy.body.contains("/film.mkv"), "{ntfy:?}");
    assert!(
        messages(&r.hits(), "firing", "corruption")
            .iter()
            .all(|h| h.path != "/gotify"),
        "gotify asked for critical only"
    );

    // Degraded, with the reasons, and no file name where no token is asked.
    let (code, out) = healthcheck(&s.url);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("degraded") && out.contains("damaged part"),
        "{out}"
    );
    let o = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("{}/api/v1/health", s.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{text}");
    let h: Value = serde_json::from_str(body).unwrap();
    assert_eq!(h["status"], "degraded", "{h:#}");
    assert!(!body.contains("film"), "{body}");

    // The repair ends both: each resolved once, where it was sent.
    s.ok(&["repair", "resume"]);
    wait_for(90, "the resolved messages", || {
        let hits = r.hits();
        (messages(&hits, "resolved", "corruption").len() == 2
            && messages(&hits, "resolved", "files_at_risk").len() == 3)
            .then_some(())
    });
    wait_for(30, "healthcheck: healthy again", || {
        let (code, out) = healthcheck(&s.url);
        (code == 0).then_some(out)
    });
    let hits = r.hits();
    assert_eq!(
        messages(&hits, "firing", "corruption").len(),
        2,
        "{hits:#?}"
    );
    assert_eq!(messages(&hits, "resolved", "files_at_risk").len(), 3);

    // The events, the same history any machine would show.
    let ev = s.json(&["events", "-n", "100"]);
    let events = ev["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in [
        "member_joined",
        "disk_added",
        "leader_changed",
        "corruption_found",
        "corruption_repaired",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let found = events
        .iter()
        .find(|e| e["kind"] == "corruption_found")
        .unwrap();
    assert_eq!(found["path"], "/film.mkv", "{found:#}");
    assert_eq!(found["severity"], "warning");
    let text = s.ok(&["events"]);
    assert!(
        text.lines()
            .any(|l| l.contains("corruption_repaired") && l.contains("/film.mkv")),
        "{text}"
    );

    // The deliveries remember the refusal.
    let v = s.json(&["alerts"]);
    assert!(
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["error"].as_str().is_some_and(|e| e.contains("503"))),
        "{v:#}"
    );

    // A node that does not answer is down.
    let url = s.url.clone();
    assert!(s.term().success());
    let (code, out) = healthcheck(&url);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with("down") && out.contains("does not answer"),
        "{out}"
    );
}
