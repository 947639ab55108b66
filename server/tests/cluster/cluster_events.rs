//! Events and health on three machines: every machine holds the same history; the leader
//! records a machine that stops answering and its return; `wormfs healthcheck` says degraded
//! while one machine is gone, down on a leader no majority answers, and healthy again once all
//! are back.

use serde_json::Value;

use crate::common::machines::{cluster, peers_of, share_secret, start_all, voters, Machine};
use crate::common::process::{wait_for, Server, BIN};

fn events(s: &Server) -> Vec<Value> {
    s.json(&["events", "-n", "1000"])["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// `(id, kind, message)` of every event, for comparing machines.
fn history(s: &Server) -> Vec<(u64, String, String)> {
    events(s)
        .iter()
        .map(|e| {
            (
                e["id"].as_u64().unwrap(),
                e["kind"].as_str().unwrap().to_owned(),
                e["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn healthcheck(s: &Server) -> (i32, String) {
    let o = std::process::Command::new(BIN)
        .args(["--node", &s.url, "healthcheck", "--timeout", "5"])
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).trim().to_owned(),
    )
}

fn s(servers: &[Option<Server>], i: usize) -> &Server {
    servers[i].as_ref().unwrap()
}

fn has_event(s: &Server, kind: &str, node: u64) -> bool {
    events(s)
        .iter()
        .any(|e| e["kind"] == kind && e["node"].as_u64() == Some(node))
}

#[test]
fn every_machine_holds_the_same_events_and_health_follows_the_members() {
    let t = tempfile::tempdir().unwrap();
    let mut ms: Vec<Machine> = (1u8..=3)
        .map(|n| Machine::new(t.path(), n, u64::from(n)))
        .collect();
    for m in &mut ms {
        m.env = vec![
            ("WORMFS_ALERTS__MEMBER_LOST_AFTER_MS".into(), "2000".into()),
            ("WORMFS_ALERTS__DEBOUNCE_MS".into(), "300".into()),
        ];
    }
    share_secret(&ms);
    let mut servers: Vec<Option<Server>> = start_all(&ms);
    let leader = wait_for(90, "three voters and a leader", || {
        let v = cluster(s(&servers, 0));
        (voters(&v).len() == 3 && v["leader"].is_u64()).then(|| v["leader"].as_u64().unwrap())
    });
    let li = (leader - 1) as usize;
    wait_for(60, "healthy on every machine", || {
        (0..3)
            .all(|i| healthcheck(s(&servers, i)).0 == 0)
            .then_some(())
    });

    // One history, the same on every machine, with every machine's arrival in it.
    let h = wait_for(60, "the same events on every machine", || {
        let h0 = history(s(&servers, 0));
        let joined = h0.iter().filter(|e| e.1 == "member_joined").count();
        let same = (1..3).all(|i| history(s(&servers, i)) == h0);
        (same && joined == 3 && h0.iter().any(|e| e.1 == "leader_changed")).then_some(h0)
    });
    assert!(h.windows(2).all(|w| w[0].0 > w[1].0), "newest first: {h:?}");

    // A follower stops: the leader records it, its health is degraded, the reason says why.
    let f1 = (0..3).find(|i| *i != li).unwrap();
    let f1_id = (f1 + 1) as u64;
    servers[f1].take().unwrap().kill9();
    wait_for(60, "member_unreachable recorded by the leader", || {
        has_event(s(&servers, li), "member_unreachable", f1_id).then_some(())
    });
    let (code, out) = wait_for(60, "the leader degraded", || {
        let r = healthcheck(s(&servers, li));
        (r.0 == 1).then_some(r)
    });
    assert!(out.contains("does not answer"), "{code}: {out}");
    let alerts = s(&servers, li).json(&["alerts"]);
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == format!("member_lost:{f1_id}")),
        "{alerts:#}"
    );

    // The other follower stops too: the leader, answered by no majority, is down.
    let f2 = (0..3).find(|i| *i != li && *i != f1).unwrap();
    servers[f2].take().unwrap().kill9();
    let (_, out) = wait_for(60, "the lone machine down", || {
        let r = healthcheck(s(&servers, li));
        (r.0 == 2).then_some(r)
    });
    assert!(out.starts_with("down") && out.contains("majority"), "{out}");
    let o = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/api/v1/health", s(&servers, li).url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "503");

    // Both come back: recorded back, and healthy everywhere again.
    for i in [f1, f2] {
        servers[i] = Some(ms[i].start(&peers_of(&ms, i)));
    }
    wait_for(90, "member_back recorded for the first one", || {
        (0..3)
            .any(|i| has_event(s(&servers, i), "member_back", f1_id))
            .then_some(())
    });
    wait_for(90, "healthy on every machine again", || {
        (0..3)
            .all(|i| healthcheck(s(&servers, i)).0 == 0)
            .then_some(())
    });
    wait_for(60, "the same events on every machine again", || {
        let h0 = history(s(&servers, 0));
        (1..3).all(|i| history(s(&servers, i)) == h0).then_some(())
    });
}
