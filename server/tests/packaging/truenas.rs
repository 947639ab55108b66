//! The TrueNAS SCALE app (packaging/truenas): its catalog files are well formed and every question
//! is used; the template, rendered by our renderer of the catalog library's API
//! (packaging/truenas/render), gives the compose file TrueNAS would run; the bridge one starts
//! with docker-compose, turns healthy and serves WebDAV; a host path the run-as user cannot
//! write stops the node with an error that names the path, the user and the fix.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::support::{
    http_code, image, ok, repo, run, temp_dir, unique, wait_for, workspace_version,
};

/// The app folder.
fn app() -> PathBuf {
    repo().join("packaging/truenas")
}

/// A test_values file.
fn test_values(name: &str) -> PathBuf {
    app().join("templates/test_values").join(name)
}

/// A Python with Jinja2 and PyYAML (installed by the renderer's own script when missing).
fn python() -> String {
    ok(Command::new("bash").arg(app().join("render/ensure-deps.sh")))
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

/// A YAML file as JSON (PyYAML's safe loader).
fn yaml(path: &Path) -> Value {
    let out = ok(Command::new(python())
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(path));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What one render gave.
struct Rendered {
    /// The compose file, as TrueNAS would run it.
    file: PathBuf,
    /// The copy for Debian's docker-compose 1.x.
    v1_file: PathBuf,
    /// The compose file as JSON.
    doc: Value,
    /// Every values key the template or the library read.
    used: BTreeSet<String>,
}

impl Rendered {
    fn service(&self) -> &Value {
        &self.doc["services"]["wormfs"]
    }
    fn env(&self, name: &str) -> Option<&str> {
        self.service()["environment"][name].as_str()
    }
}

/// Renders `values` (a file) with `set` merged over it, into `dir`; panics if it fails.
fn render(values: &Path, set: &Value, dir: &Path) -> Rendered {
    let out = try_render(values, set, dir);
    assert!(
        out.status.success(),
        "rendering {} failed: {}",
        values.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let used = std::fs::read_to_string(dir.join("used-keys.txt")).unwrap();
    Rendered {
        file: dir.join("docker-compose.yaml"),
        v1_file: dir.join("docker-compose.v1.yaml"),
        doc: serde_json::from_str(
            &std::fs::read_to_string(dir.join("docker-compose.json")).unwrap(),
        )
        .unwrap(),
        used: used.lines().map(str::to_owned).collect(),
    }
}

fn try_render(values: &Path, set: &Value, dir: &Path) -> std::process::Output {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("bash")
        .arg(app().join("render/render.sh"))
        .arg("--app")
        .arg(app())
        .arg("--values")
        .arg(values)
        .arg("--set")
        .arg(set.to_string())
        .arg("--out")
        .arg(dir.join("docker-compose.yaml"))
        .arg("--json-out")
        .arg(dir.join("docker-compose.json"))
        .arg("--compose-v1-out")
        .arg(dir.join("docker-compose.v1.yaml"))
        .arg("--used-keys")
        .arg(dir.join("used-keys.txt")))
}

/// Host paths for the data folder and three disks under `root`, owned by `owner`.
fn host_paths(root: &Path, owner: &str) -> (PathBuf, Vec<PathBuf>) {
    let data = root.join("data");
    let disks: Vec<PathBuf> = (1..=3).map(|i| root.join(format!("disk{i}"))).collect();
    for d in std::iter::once(&data).chain(&disks) {
        std::fs::create_dir_all(d).unwrap();
        ok(Command::new("chown").arg(owner).arg(d));
    }
    (data, disks)
}

fn storage_set(data: &Path, disks: &[PathBuf]) -> Value {
    json!({"storage": {
        "data": {"type": "host_path", "host_path_config": {"path": data}},
        "disks": disks.iter().map(|d| json!({"host_path": d})).collect::<Vec<_>>(),
    }})
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// A TCP port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A docker-compose project, brought down (with its volumes) when dropped.
struct Compose {
    project: String,
    file: PathBuf,
}

impl Compose {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker-compose");
        c.arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.file)
            .args(args);
        c
    }
    fn up(project: String, file: PathBuf) -> Compose {
        // The guard first: a failed `up` may leave a network or a container behind.
        let c = Compose { project, file };
        ok(&mut c.cmd(&["up", "-d"]));
        c
    }
    /// The container's id.
    fn container(&self) -> String {
        let id = ok(&mut self.cmd(&["ps", "-q", "wormfs"]));
        assert!(!id.is_empty(), "docker-compose lists no wormfs container");
        id
    }
    fn logs(&self) -> String {
        let out = run(&mut self.cmd(&["logs", "--no-color", "wormfs"]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- logs of {}:\n{}", self.project, self.logs());
        }
        let _ = run(&mut self.cmd(&["down", "-v", "--remove-orphans", "-t", "20"]));
    }
}

/// The leaf variables of a questions.yaml schema, as values paths (`a.b`, list items `a[].b`; a
/// list of scalars is its own leaf). Also checks each question's structure.
fn question_leaves(
    questions: &Value,
    prefix: &str,
    groups: &BTreeSet<String>,
    out: &mut Vec<String>,
) {
    for q in questions.as_array().expect("questions is a list") {
        let var = q["variable"]
            .as_str()
            .expect("every question has a variable");
        assert!(q.get("label").is_some(), "question {var} has no label");
        let schema = &q["schema"];
        let ty = schema["type"]
            .as_str()
            .unwrap_or_else(|| panic!("question {var} has no schema.type"));
        assert!(
            ["string", "int", "boolean", "dict", "list", "hostpath", "path", "ipaddr", "uri"]
                .contains(&ty),
            "question {var}: unknown type {ty}"
        );
        if prefix.is_empty() {
            let g = q["group"]
                .as_str()
                .unwrap_or_else(|| panic!("top question {var} has no group"));
            assert!(
                groups.contains(g),
                "question {var}: group {g} is not declared"
            );
        }
        if let Some(e) = schema.get("enum") {
            let d = &schema["default"];
            if !d.is_null() {
                assert!(
                    e.as_array().unwrap().iter().any(|v| &v["value"] == d),
                    "question {var}: default {d} is not one of its enum"
                );
            }
        }
        let path = if prefix.is_empty() {
            var.to_owned()
        } else {
            format!("{prefix}.{var}")
        };
        match ty {
            "dict" => question_leaves(&schema["attrs"], &path, groups, out),
            "list" => {
                let item = &schema["items"][0];
                if item["schema"]["type"] == "dict" {
                    question_leaves(&item["schema"]["attrs"], &format!("{path}[]"), groups, out);
                } else {
                    out.push(path);
                }
            }
            _ => out.push(path),
        }
    }
}

/// Values from the questions' defaults (what the UI starts with).
fn defaults(questions: &Value) -> Value {
    let mut v = serde_json::Map::new();
    for q in questions.as_array().unwrap() {
        let schema = &q["schema"];
        let d = match schema["type"].as_str().unwrap() {
            "dict" => defaults(&schema["attrs"]),
            _ => schema["default"].clone(),
        };
        if !d.is_null() {
            v.insert(q["variable"].as_str().unwrap().to_owned(), d);
        }
    }
    Value::Object(v)
}

#[test]
fn catalog_files_are_complete_and_every_question_is_used() {
    let app_yaml = yaml(&app().join("app.yaml"));
    for key in [
        "app_version",
        "capabilities",
        "categories",
        "description",
        "home",
        "host_mounts",
        "icon",
        "keywords",
        "lib_version",
        "maintainers",
        "name",
        "run_as_context",
        "sources",
        "title",
        "train",
        "version",
    ] {
        assert!(app_yaml.get(key).is_some(), "app.yaml has no {key}");
    }
    assert_eq!(app_yaml["name"], "wormfs");
    assert_eq!(app_yaml["train"], "community");
    assert_eq!(app_yaml["run_as_context"][0]["uid"], 568);
    assert_eq!(app_yaml["run_as_context"][0]["gid"], 568);

    // The image the app runs is the one packaging/container/build.sh tags.
    let ix_values = yaml(&app().join("ix_values.yaml"));
    let version = workspace_version();
    assert_eq!(
        ix_values["images"]["image"]["repository"],
        "ghcr.io/wormfs/wormfs"
    );
    assert_eq!(ix_values["images"]["image"]["tag"], version.as_str());
    assert_eq!(app_yaml["app_version"], version.as_str());
    for key in ix_values["images"].as_object().unwrap().keys() {
        assert!(
            key.ends_with("image"),
            "image key {key} must end in `image`"
        );
    }
    for f in ["README.md", "templates/docker-compose.yaml"] {
        assert!(app().join(f).is_file(), "{f} is missing");
    }

    let questions = yaml(&app().join("questions.yaml"));
    let groups: BTreeSet<String> = questions["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            assert!(g["description"].is_string(), "group {g} has no description");
            g["name"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut leaves = Vec::new();
    question_leaves(&questions["questions"], "", &groups, &mut leaves);
    assert!(leaves.contains(&"network.host_network".to_owned()));
    assert!(leaves.contains(&"storage.disks[].host_path".to_owned()));

    // The defaults render (with the host paths, which have none, filled in), host network on,
    // the ports hidden until it is turned off, the user 568.
    let defaults = defaults(&questions["questions"]);
    assert_eq!(defaults["network"]["host_network"], true);
    assert_eq!(defaults["run_as"]["user"], 568);
    assert_eq!(defaults["run_as"]["group"], 568);
    let net = questions["questions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["variable"] == "network")
        .unwrap();
    for port in net["schema"]["attrs"].as_array().unwrap() {
        if port["variable"] != "host_network" {
            assert_eq!(
                port["schema"]["show_if"],
                json!([["host_network", "=", false]]),
                "{} must show only without the host network",
                port["variable"]
            );
        }
    }
    let tmp = temp_dir();
    let mut values = defaults.clone();
    merge(
        &mut values,
        storage_set(
            Path::new("/mnt/ssd/wormfs"),
            &[PathBuf::from("/mnt/tank/wormfs/disk1")],
        ),
    );
    let values_file = tmp.path().join("defaults.json");
    std::fs::write(&values_file, values.to_string()).unwrap();
    let from_defaults = render(&values_file, &json!({}), &tmp.path().join("defaults"));
    assert_eq!(from_defaults.service()["network_mode"], "host");
    assert_eq!(from_defaults.env("WORMFS_DISCOVERY__MDNS"), Some("true"));

    // Every question is read by the template or the library, with one values file or another.
    let basic = render(
        &test_values("basic-values.yaml"),
        &json!({}),
        &tmp.path().join("basic"),
    );
    let hostnet = render(
        &test_values("hostnet-values.yaml"),
        &json!({}),
        &tmp.path().join("hostnet"),
    );
    let used: BTreeSet<&String> = basic
        .used
        .iter()
        .chain(&hostnet.used)
        .chain(&from_defaults.used)
        .collect();
    let unused: Vec<&String> = leaves.iter().filter(|l| !used.contains(l)).collect();
    assert!(unused.is_empty(), "questions no render reads: {unused:?}");
}

#[test]
fn rendered_compose_files_have_the_library_shape() {
    let tmp = temp_dir();
    let basic = render(
        &test_values("basic-values.yaml"),
        &json!({}),
        &tmp.path().join("b"),
    );
    let hostnet = render(
        &test_values("hostnet-values.yaml"),
        &json!({}),
        &tmp.path().join("h"),
    );
    let keys: Vec<&String> = basic.doc.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["services", "x-action-required", "x-notes", "x-portals"]
    );
    for r in [&basic, &hostnet] {
        let s = r.service();
        assert_eq!(s["image"], "ghcr.io/wormfs/wormfs:0.1.0");
        assert_eq!(s["user"], "568:568");
        assert_eq!(s["group_add"], json!([568]));
        assert_eq!(s["restart"], "unless-stopped");
        assert_eq!(s["cap_drop"], json!(["ALL"]));
        assert_eq!(s["security_opt"], json!(["no-new-privileges=true"]));
        assert_eq!(s["privileged"], false);
        assert_eq!(s["stop_grace_period"], "60s");
        assert_eq!(s["platform"], "linux/amd64");
        let hc = &s["healthcheck"];
        assert_eq!(
            hc["test"].as_array().unwrap()[..4],
            [
                json!("CMD"),
                json!("/wormfs"),
                json!("healthcheck"),
                json!("--container")
            ]
        );
        for k in [
            "interval",
            "timeout",
            "retries",
            "start_period",
            "start_interval",
        ] {
            assert!(hc.get(k).is_some(), "healthcheck has no {k}");
        }
        assert_eq!(
            s["deploy"]["resources"]["limits"],
            json!({"cpus": "2.0", "memory": "4096M"})
        );
        let vols = s["volumes"].as_array().unwrap();
        let targets: Vec<&str> = vols.iter().map(|v| v["target"].as_str().unwrap()).collect();
        assert_eq!(
            targets,
            ["/data", "/disks/disk1", "/disks/disk2", "/disks/disk3"]
        );
        for v in vols {
            assert_eq!(v["type"], "bind");
            assert_eq!(v["read_only"], false);
            assert_eq!(
                v["bind"],
                json!({"create_host_path": false, "propagation": "rprivate"})
            );
        }
        assert!(r.env("TZ").is_some());
        assert_eq!(r.env("PUID"), Some("568"));
        assert_eq!(r.env("WORMFS_DISCOVERY__MDNS"), Some("false"));
        assert_eq!(r.doc["x-portals"][0]["port"], 7710);
        // The docker-compose 1.x copy drops exactly the two keys its schema lacks.
        let mut faithful = r.doc.clone();
        for v in faithful["services"]["wormfs"]["volumes"]
            .as_array_mut()
            .unwrap()
        {
            v["bind"]
                .as_object_mut()
                .unwrap()
                .remove("create_host_path");
        }
        faithful["services"]["wormfs"]["healthcheck"]
            .as_object_mut()
            .unwrap()
            .remove("start_interval");
        assert_eq!(yaml(&r.v1_file), faithful);
        assert_eq!(yaml(&r.file), r.doc);
    }

    // Bridge: the four ports published (IPv4 and IPv6 wildcards), no network mode.
    let s = basic.service();
    assert!(s.get("network_mode").is_none());
    let ports: Vec<(u64, u64)> = s["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["protocol"], "tcp");
            assert!(
                p.get("host_ip").is_none(),
                "{p}: both wildcards give no host_ip"
            );
            (
                p["published"].as_u64().unwrap(),
                p["target"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [(7710, 7710), (7711, 7711), (7712, 7712), (7713, 7713)]
    );
    assert_eq!(s["labels"], json!({"org.wormfs.test": "basic"}));
    assert_eq!(basic.env("WORMFS_LOG__LEVEL"), Some("info"));
    assert_eq!(basic.env("WORMFS_NODE__NAME"), Some("truenas-basic"));
    assert_eq!(basic.doc["x-action-required"], false);

    // Host network: no ports (the node's own 7710-7713), the static peer, and the notes warn that
    // two disks share a pool.
    let s = hostnet.service();
    assert_eq!(s["network_mode"], "host");
    assert!(s.get("ports").is_none());
    assert_eq!(
        hostnet.env("WORMFS_CLUSTER__PEERS"),
        Some("192.0.2.20:7712")
    );
    assert_eq!(hostnet.env("WORMFS_NODE__CLUSTER_NAME"), Some("home"));
    assert!(hostnet.env("WORMFS_NODE__NAME").is_none());
    let notes = hostnet.doc["x-notes"].as_str().unwrap();
    assert!(
        notes.contains("one pool [tank2]: one failure domain"),
        "notes: {notes}"
    );
    assert!(
        !notes.contains("[tank1]"),
        "one disk on tank1 is no warning: {notes}"
    );
    assert_eq!(hostnet.doc["x-action-required"], true);

    // The library's checks hold: paths TrueNAS refuses, no disk, a bad port.
    for (set, why) in [
        (
            json!({"storage": {"data": {"host_path_config": {"path": "/mnt"}}}}),
            "is not allowed to be mounted",
        ),
        (
            json!({"storage": {"disks": [{"host_path": "/root/disk"}]}}),
            "is not allowed to be mounted",
        ),
        (json!({"storage": {"disks": []}}), "Add at least one disk"),
        (
            json!({"network": {"api_port": {"port_number": 70000}}}),
            "Invalid port [70000]",
        ),
        (
            json!({"run_as": {"user": "568"}}),
            "User/Group [568] is not valid",
        ),
    ] {
        let out = try_render(
            &test_values("basic-values.yaml"),
            &set,
            &tmp.path().join("bad"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} rendered");
        assert!(err.contains(why), "{set}: expected `{why}`, got: {err}");
    }
}

/// Renders the bridge values with free ports and the given host paths, for docker-compose 1.x.
fn bridge_compose(dir: &Path, data: &Path, disks: &[PathBuf]) -> (Rendered, u16, u16) {
    let (api, webdav, peer, data_port) = (free_port(), free_port(), free_port(), free_port());
    let mut set = storage_set(data, disks);
    merge(
        &mut set,
        json!({"network": {
            "api_port": {"port_number": api},
            "webdav_port": {"port_number": webdav},
            "peer_port": {"port_number": peer},
            "data_port": {"port_number": data_port},
        }}),
    );
    (
        render(&test_values("basic-values.yaml"), &set, dir),
        api,
        webdav,
    )
}

#[test]
fn rendered_bridge_compose_starts_healthy_and_serves_webdav() {
    let image = image();
    assert!(image.ends_with(":0.1.0"), "{image}");
    let tmp = temp_dir();
    let (data, disks) = host_paths(&tmp.path().join("mnt"), "568:568");
    let (r, api, webdav) = bridge_compose(&tmp.path().join("render"), &data, &disks);
    let published = r.service()["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"] == 7711)
        .expect("WebDAV is published")["published"]
        .clone();
    assert_eq!(published, webdav);

    let compose = Compose::up(unique("truenas"), r.v1_file.clone());
    let id = compose.container();
    assert_eq!(
        ok(Command::new("docker").args(["inspect", "-f", "{{.Config.User}}", &id])),
        "568:568"
    );
    // Docker runs the compose file's health check (`wormfs healthcheck --container`).
    wait_for(180, "docker to call the TrueNAS app healthy", || {
        let h = ok(Command::new("docker").args(["inspect", "-f", "{{.State.Health.Status}}", &id]));
        assert_ne!(
            h,
            "unhealthy",
            "docker calls it unhealthy:\n{}",
            compose.logs()
        );
        (h == "healthy").then_some(())
    });
    // The admin page answers on its published port, and WebDAV with the generated admin's
    // password, which the node wrote into the data host path.
    assert_eq!(http_code(&[&format!("http://127.0.0.1:{api}/")]), "200");
    let admin = std::fs::read_to_string(data.join("webdav-admin.txt")).unwrap();
    let password = admin
        .lines()
        .find_map(|l| l.strip_prefix("password = "))
        .expect("webdav-admin.txt has a password line");
    let url = format!("http://127.0.0.1:{webdav}/");
    assert_eq!(http_code(&[&url]), "401", "WebDAV without a password");
    assert_eq!(
        http_code(&[
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 0",
            "-u",
            &format!("admin:{password}"),
            &url
        ]),
        "207"
    );
    // Its data went where the host paths say: the disks hold the node's disk identity.
    for d in &disks {
        assert!(
            std::fs::read_dir(d).unwrap().next().is_some(),
            "{} is still empty",
            d.display()
        );
    }
}

#[test]
fn host_path_the_run_as_user_cannot_write_is_named_with_its_fix() {
    image();
    let tmp = temp_dir();
    let (data, disks) = host_paths(&tmp.path().join("mnt"), "568:568");
    // What a new dataset looks like before its permissions are set: root's, mode 0755.
    ok(Command::new("chown").arg("0:0").arg(&data));
    ok(Command::new("chmod").arg("0755").arg(&data));
    let (r, _, _) = bridge_compose(&tmp.path().join("render"), &data, &disks);
    let compose = Compose::up(unique("truenas-perm"), r.v1_file.clone());
    let logs = wait_for(90, "the node to refuse /data", || {
        let logs = compose.logs();
        (logs.contains("/data") && logs.contains("568") && logs.contains("chown")).then_some(logs)
    });
    let id = compose.container();
    let running = ok(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.State.Running}} {{.State.Restarting}}",
        &id,
    ]));
    assert!(
        ok(Command::new("docker").args(["inspect", "-f", "{{.State.Health.Status}}", &id]))
            != "healthy",
        "a node that cannot write /data is not healthy ({running})"
    );
    assert!(
        std::fs::read_dir(&data).unwrap().next().is_none(),
        "nothing was written to the root-owned data folder"
    );
    eprintln!("the node said:\n{logs}");
}
