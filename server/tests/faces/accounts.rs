//! The accounts of one node: the users a config file lists are imported into the cluster's
//! and win again at the next start (no `admin` is generated beside them), a change made with
//! `wormfs user passwd` to such a user is flagged, and a revoked machine token stays revoked,
//! on its own machine too and after a restart.

use crate::common::dav::Dav;
use crate::common::process::{free_port, wait_for, webdav_port, Server};

fn login(s: &Server, user: &str, password: &str) -> Dav {
    let port = webdav_port(s.port);
    Dav {
        base: format!("http://127.0.0.1:{port}"),
        login: Some(format!("{user}:{password}")),
        port,
    }
}

fn propfind(d: &Dav) -> u16 {
    d.curl(&["-X", "PROPFIND", "-H", "Depth: 0"], "/").status
}

fn hash(pw: &str) -> String {
    wormfs_webdav::auth::hash_password(pw).unwrap()
}

#[test]
fn config_users_are_imported_and_the_file_wins_at_each_start() {
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let users = format!("ann:rw:{}", hash("first"));
    let s = Server::start_env(t.path(), port, &[], &[("WORMFS_WEBDAV__USERS", &users)]);
    wait_for(30, "ann logs in", || {
        (propfind(&login(&s, "ann", "first")) == 207).then_some(())
    });
    assert!(
        !t.path().join("wormfs-data/webdav-admin.txt").exists(),
        "no admin is generated beside the config's users"
    );
    let listed = s.json(&["user", "list"]);
    assert_eq!(listed["users"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["users"][0]["name"], "ann");
    assert!(
        listed["users"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("config node "),
        "{listed}"
    );
    // A change through the CLI works, and says the config file will put it back.
    let o = s.cli(&["user", "passwd", "ann", "--generate"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("config file"),
        "{o:?}"
    );
    s.term();

    // The file now says another password and a read-only role: it wins at the start.
    let users = format!("ann:ro:{}", hash("second"));
    let s = Server::start_env(t.path(), port, &[], &[("WORMFS_WEBDAV__USERS", &users)]);
    wait_for(30, "ann's new password from the file", || {
        (propfind(&login(&s, "ann", "second")) == 207).then_some(())
    });
    assert_eq!(propfind(&login(&s, "ann", "first")), 401);
    let put = login(&s, "ann", "second").curl(&["-X", "PUT", "--data-binary", "x"], "/a.txt");
    assert_eq!(put.status, 403, "the file's read-only role applies");
    s.term();
}

#[test]
fn a_revoked_machine_token_stays_revoked_on_its_own_machine() {
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(t.path(), port, &[]);
    // The generated admin exists when the API answers, and logs in.
    let admin = crate::common::dav::admin_login(&t.path().join("wormfs-data"));
    let (user, pw) = admin.split_once(':').unwrap();
    assert_eq!(propfind(&login(&s, user, pw)), 207);
    let listed = s.json(&["user", "list"]);
    assert_eq!(listed["users"][0]["role"], "admin", "{listed}");
    assert_eq!(listed["users"][0]["source"], "generated", "{listed}");

    let spare = s.json(&["token", "create", "spare"]);
    let spare = spare["token"].as_str().unwrap().to_owned();
    let node = s.json(&["status"])["node_id"].as_u64().unwrap();
    let machine = format!("node-{node}");
    let o = s.cli(&["--token", &spare, "token", "revoke", &machine]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("local token"),
        "{o:?}"
    );
    // The CLI on this machine (its admin-token file) is refused, here too.
    s.fails(&["status"], 6, "revoked");
    s.term();
    let s = Server::start(t.path(), port, &[]);
    s.fails(&["status"], 6, "revoked");
    let o = s.cli(&["--token", &spare, "--json", "token", "list"]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mine = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == machine.as_str())
        .unwrap();
    assert!(mine["revoked_ms"].is_u64(), "{v}");
    assert_eq!(mine["machine"], node);
    s.term();
}
