//! The trash and retention locks in a cluster of three machines: the trash setting is
//! replicated, a file deleted through one machine is listed and restored through the others,
//! and a retention set through one refuses a delete through another.

use crate::common::machines::{cluster, share_secret, start_all, voters, Machine};
use crate::common::process::wait_for;

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ seed).collect()
}

#[test]
fn the_trash_and_retentions_are_the_same_through_every_machine() {
    let t = tempfile::tempdir().unwrap();
    let ms: Vec<Machine> = (1u8..=3)
        .map(|n| Machine::new(t.path(), n, u64::from(n)))
        .collect();
    share_secret(&ms);
    let servers: Vec<_> = start_all(&ms).into_iter().map(Option::unwrap).collect();
    wait_for(90, "three voters and a leader", || {
        let v = cluster(&servers[0]);
        (voters(&v).len() == 3 && v["leader"].is_u64()).then_some(())
    });
    for s in &servers {
        wait_for(60, "the trash on everywhere", || {
            (s.json(&["status"])["trash"]["enabled"] == true).then_some(())
        });
    }
    let data = bytes(2_000_000, 1);
    std::fs::write(ms[0].dir.join("f.bin"), &data).unwrap();
    servers[0].ok(&["put", "f.bin", "/films/f.bin"]);
    servers[1].ok(&["rm", "/films/f.bin"]);
    let listed = wait_for(30, "the trash entry on the third machine", || {
        let v = servers[2].json(&["trash", "ls", "/films"]);
        (v["entries"].as_array()?.len() == 1).then_some(v)
    });
    assert_eq!(listed["entries"][0]["path"], "/films/f.bin");
    servers[2].ok(&["trash", "restore", "/films/f.bin"]);
    let out = ms[0].dir.join("back.bin");
    wait_for(30, "the restored file on the first machine", || {
        servers[0]
            .cli(&["get", "/films/f.bin", out.to_str().unwrap()])
            .status
            .success()
            .then_some(())
    });
    assert_eq!(std::fs::read(&out).unwrap(), data);

    servers[1].ok(&["mkdir", "/vault"]);
    servers[1].ok(&["policy", "set", "/vault", "retain:1h"]);
    let src = ms[0].dir.join("f.bin");
    servers[2].ok(&["put", src.to_str().unwrap(), "/vault/f.bin"]);
    for s in &servers {
        s.fails(&["rm", "/vault/f.bin"], 4, "retained until");
    }
    for s in servers {
        s.term();
    }
}
