//! The cluster's accounts on three machines: one generated WebDAV password and every machine's
//! token work on every machine; a user added through one logs in on the others, a read-only
//! user and token may only read, a revoked token and a removed user stop working everywhere.

use serde_json::Value;

use crate::common::dav::Dav;
use crate::common::machines::{cluster, share_secret, start_all, voters, Machine};
use crate::common::process::{wait_for, webdav_port, Server};

fn dav(m: &Machine, login: &str) -> Dav {
    let port = webdav_port(m.api);
    Dav {
        base: format!("http://127.0.0.1:{port}"),
        login: Some(login.to_owned()),
        port,
    }
}

/// The status of `curl -X METHOD` on `path` through `d` (with a body for PUT).
fn status(d: &Dav, method: &str, path: &str) -> u16 {
    let args: Vec<&str> = match method {
        "PUT" => vec!["-X", "PUT", "--data-binary", "hello"],
        "PROPFIND" => vec!["-X", "PROPFIND", "-H", "Depth: 0"],
        _ => vec!["-X", method],
    };
    d.curl(&args, path).status
}

/// `wormfs --token TOKEN ARGS` against `s`.
fn with_token(s: &Server, token: &str, args: &[&str]) -> std::process::Output {
    let mut a = vec!["--token", token];
    a.extend_from_slice(args);
    s.cli(&a)
}

fn json_of(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn one_set_of_users_and_tokens_works_on_every_machine() {
    let t = tempfile::tempdir().unwrap();
    let ms: Vec<Machine> = (1u8..=3)
        .map(|n| Machine::new(t.path(), n, u64::from(n)))
        .collect();
    share_secret(&ms);
    let servers: Vec<Server> = start_all(&ms).into_iter().map(Option::unwrap).collect();
    wait_for(90, "three voters and a leader", || {
        let v = cluster(&servers[0]);
        (voters(&v).len() == 3 && v["leader"].is_u64()).then_some(())
    });

    // Every machine's own token (its admin-token file) works on every machine.
    let tokens: Vec<String> = ms
        .iter()
        .map(|m| {
            std::fs::read_to_string(m.dir.join("wormfs-data/admin-token"))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();
    for (i, tok) in tokens.iter().enumerate() {
        for s in &servers {
            wait_for(
                60,
                &format!("machine {}'s token accepted everywhere", i + 1),
                || {
                    with_token(s, tok, &["status"])
                        .status
                        .success()
                        .then_some(())
                },
            );
        }
    }
    let listed = servers[2].json(&["token", "list"]);
    let names: Vec<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{listed}");
    for m in &ms {
        assert!(
            names.contains(&format!("node-{}", m.id).as_str()),
            "{listed}"
        );
    }

    // One machine generated the cluster's admin password, and it works on all three.
    let files: Vec<&Machine> = ms
        .iter()
        .filter(|m| m.dir.join("wormfs-data/webdav-admin.txt").exists())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "exactly one machine writes the generated password"
    );
    let admin = crate::common::dav::admin_login(&files[0].dir.join("wormfs-data"));
    for m in &ms {
        wait_for(30, "the admin login on every machine", || {
            (status(&dav(m, &admin), "PROPFIND", "/") == 207).then_some(())
        });
    }

    // A user added through the first machine logs in on the others.
    let added = servers[0].json(&["user", "add", "ann", "--generate"]);
    let ann = format!("ann:{}", added["password"].as_str().unwrap());
    assert_eq!(added["user"]["role"], "rw");
    wait_for(30, "ann writes through the third machine", || {
        (status(&dav(&ms[2], &ann), "PUT", "/from-ann.txt") == 201).then_some(())
    });
    // The second machine may apply the new user a moment later (its WebDAV face reloads the
    // users within 250 ms of applying them): it reads the file as soon as it has them.
    wait_for(30, "ann reads through the second machine", || {
        let got = dav(&ms[1], &ann).curl(&[], "/from-ann.txt");
        (got.status == 200).then_some(got.text())
    });
    let got = dav(&ms[1], &ann).curl(&[], "/from-ann.txt");
    assert_eq!((got.status, got.text().as_str()), (200, "hello"));
    // A read-only user reads but does not write, on any machine.
    let kid = servers[1].json(&["user", "add", "kid", "--role", "ro", "--generate"]);
    let kid = format!("kid:{}", kid["password"].as_str().unwrap());
    wait_for(30, "kid reads through the first machine", || {
        (status(&dav(&ms[0], &kid), "GET", "/from-ann.txt") == 200).then_some(())
    });
    assert_eq!(status(&dav(&ms[0], &kid), "PUT", "/kid.txt"), 403);
    // Adding a name twice is refused.
    servers[2].fails(&["user", "add", "ann", "--generate"], 4, "already exists");

    // A token made through the second machine works on the third; a read-only one only reads.
    let made = servers[1].json(&["token", "create", "script"]);
    let script = made["token"].as_str().unwrap().to_owned();
    let ro = servers[1].json(&["token", "create", "watcher", "--read-only"]);
    let ro = ro["token"].as_str().unwrap().to_owned();
    wait_for(30, "the new tokens on the third machine", || {
        (with_token(&servers[2], &script, &["mkdir", "/made-by-script"])
            .status
            .success()
            && with_token(&servers[2], &ro, &["ls", "/"]).status.success())
        .then_some(())
    });
    let refused = with_token(&servers[0], &ro, &["mkdir", "/nope"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("may only read"),
        "{refused:?}"
    );

    // Revoked through the third machine: refused everywhere.
    json_of(&with_token(
        &servers[2],
        &script,
        &["--json", "token", "revoke", "script"],
    ));
    for s in &servers {
        wait_for(30, "the revoked token refused everywhere", || {
            let o = with_token(s, &script, &["status"]);
            (!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("revoked"))
                .then_some(())
        });
    }
    // A removed user and a changed password stop working everywhere.
    servers[1].ok(&["user", "remove", "ann"]);
    let changed = servers[2].json(&["user", "passwd", "admin", "--generate"]);
    let admin2 = format!("admin:{}", changed["password"].as_str().unwrap());
    for m in &ms {
        wait_for(
            30,
            "ann and the old admin password refused everywhere",
            || {
                (status(&dav(m, &ann), "PROPFIND", "/") == 401
                    && status(&dav(m, &admin), "PROPFIND", "/") == 401
                    && status(&dav(m, &admin2), "PROPFIND", "/") == 207)
                    .then_some(())
            },
        );
    }
    let users = servers[0].json(&["user", "list"]);
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "kid"]);
    for s in servers {
        s.term();
    }
}
