//! Tests of loading, layering and validation, on real temporary files. The environment is
//! passed in as a list, so tests never touch the process environment.

use super::*;
use std::path::Path;

/// No environment variables.
fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

/// An environment made of these pairs.
fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A temporary folder holding `wormfs.toml` with `text`.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wormfs.toml");
    fs::write(&path, text).expect("write config");
    (dir, path)
}

fn load_text(text: &str) -> Result<Config, ConfigError> {
    let (_dir, path) = config_file(text);
    load(Some(&path), no_env(), &Overrides::default())
}

/// Loads `text` and returns the error's message, failing if it loads.
fn error_of(text: &str) -> (ConfigError, String) {
    match load_text(text) {
        Ok(config) => panic!("expected an error, loaded {config:?}"),
        Err(err) => {
            let message = err.to_string();
            (err, message)
        }
    }
}

#[test]
fn embedded_defaults() {
    let config = load(None, no_env(), &Overrides::default()).expect("defaults load");
    assert_eq!(config.source, ConfigSource::Embedded);
    assert_eq!(config.node.data_dir, PathBuf::from("./wormfs-data"));
    assert_eq!(config.node.cluster_name, "wormfs");
    assert_eq!(config.node.id, None);
    assert_eq!(config.api.listen, "127.0.0.1:7710".parse().expect("addr"));
    assert_eq!(
        config.webdav.listen,
        "127.0.0.1:7711".parse().expect("addr")
    );
    let s = &config.storage;
    assert!(s.disks.is_empty());
    assert_eq!(s.default_policy, PolicySpec::Auto);
    assert_eq!(s.small_file_policy, PolicySpec::Auto);
    assert_eq!(s.small_file_threshold_bytes, 1_048_576);
    assert_eq!(s.block_size_bytes, 262_144);
    assert_eq!(s.segment_part_bytes, 64 * 1024 * 1024);
    assert_eq!(s.write_quorum_extra, 1);
    assert_eq!(s.reserve_free_bytes, 256 * 1024 * 1024);
    assert_eq!(s.conflict, ConflictRule::Rename);
    assert_eq!(
        config.ingest,
        IngestConfig {
            lease_ms: 120_000,
            sweep_interval_ms: 300_000,
            orphan_grace_ms: 600_000,
            folders: Vec::new(),
        }
    );
    assert_eq!(
        config.raft,
        RaftConfig {
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1500,
            election_timeout_max_ms: 3000,
            snapshot_every_logs: 5000,
            max_logs_kept: 1000
        }
    );
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Text);
}

#[test]
fn empty_file_listens_on_all_interfaces() {
    let (dir, path) = config_file("");
    let config = load(Some(&path), no_env(), &Overrides::default()).expect("loads");
    assert_eq!(config.source, ConfigSource::File(path.clone()));
    assert_eq!(config.api.listen, "0.0.0.0:7710".parse().expect("addr"));
    assert_eq!(config.node.data_dir, dir.path().join("wormfs-data"));
}

#[test]
fn full_file_parses() {
    let text = r#"
[node]
id = 7
name = "attic"
data_dir = "/srv/wormfs"
cluster_name = "home-01"

[api]
listen = "192.168.1.5:9000"

[storage]
disks = ["/mnt/a", "/mnt/b"]
default_policy = "ec:4+2"
small_file_threshold_bytes = 65536
small_file_policy = "copies:2"
block_size_bytes = 131072
segment_part_bytes = 1048576
write_quorum_extra = 2
reserve_free_bytes = 0
conflict = "skip"

[ingest]
lease_ms = 1000
sweep_interval_ms = 2000
orphan_grace_ms = 3000

[raft]
heartbeat_interval_ms = 100
election_timeout_min_ms = 500
election_timeout_max_ms = 900
snapshot_every_logs = 10
max_logs_kept = 20

[log]
level = "debug,hyper=info"
format = "json"
"#;
    let config = load_text(text).expect("full file loads");
    assert_eq!(config.node.id, Some(7));
    assert_eq!(config.node.name.as_deref(), Some("attic"));
    assert_eq!(config.node.data_dir, PathBuf::from("/srv/wormfs"));
    assert_eq!(config.node.cluster_name, "home-01");
    assert_eq!(config.api.listen, "192.168.1.5:9000".parse().expect("addr"));
    assert_eq!(
        config.storage,
        StorageConfig {
            disks: vec![PathBuf::from("/mnt/a"), PathBuf::from("/mnt/b")],
            default_policy: PolicySpec::Ec { k: 4, m: 2 },
            small_file_threshold_bytes: 65536,
            small_file_policy: PolicySpec::Copies { n: 2 },
            block_size_bytes: 131_072,
            segment_part_bytes: 1_048_576,
            write_quorum_extra: 2,
            reserve_free_bytes: 0,
            conflict: ConflictRule::Skip,
        }
    );
    assert_eq!(config.ingest.orphan_grace_ms, 3000);
    assert_eq!(config.raft.election_timeout_max_ms, 900);
    assert_eq!(config.raft.max_logs_kept, 20);
    assert_eq!(config.log.level, "debug,hyper=info");
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn example_parses_to_file_run_defaults() {
    let (dir, path) = config_file(example());
    let from_example = load(Some(&path), no_env(), &Overrides::default()).expect("example loads");
    let empty = dir.path().join("empty.toml");
    fs::write(&empty, "").expect("write");
    let mut defaults = load(Some(&empty), no_env(), &Overrides::default()).expect("empty loads");
    defaults.source = from_example.source.clone();
    assert_eq!(from_example, defaults);
}

#[test]
fn example_mentions_every_key_and_every_key_is_settable_from_env() {
    // Every raw field is in KEYS: serialise a raw config with every optional field set.
    let mut raw = RawConfig::default();
    raw.node.id = Some(1);
    raw.node.name = Some("n".to_owned());
    raw.api.listen = Some("127.0.0.1:1".parse().expect("addr"));
    raw.webdav.listen = Some("127.0.0.1:2".parse().expect("addr"));
    raw.webdav.tls_cert = Some("c.pem".into());
    raw.webdav.tls_key = Some("k.pem".into());
    raw.discovery.mdns = Some(true);
    raw.cluster.peer_listen = Some("127.0.0.1:3".parse().expect("addr"));
    raw.cluster.data_listen = Some("127.0.0.1:4".parse().expect("addr"));
    raw.cluster.secret_file = Some("s".into());
    raw.admin.metrics_token_file = Some("t".into());
    raw.scrub.hours = Some("01:00-06:00".into());
    let table = toml::Table::try_from(&raw).expect("serialise raw");
    let mut fields = Vec::new();
    for (section, value) in &table {
        if section == "media_servers" {
            // A top-level array of tables, checked below.
            continue;
        }
        let inner = value.as_table().expect("section is a table");
        fields.extend(inner.keys().map(|k| format!("{section}.{k}")));
    }
    let mut keys: Vec<String> = raw::KEYS.iter().map(|k| (*k).to_owned()).collect();
    fields.sort();
    keys.sort();
    assert_eq!(
        fields, keys,
        "raw::KEYS is out of step with the raw structs"
    );

    for key in raw::KEYS {
        let (section, field) = key.split_once('.').expect("dotted");
        let header = format!("[{section}]");
        let start = example().find(&header).expect("section in example");
        let body = &example()[start..];
        let body = body[header.len()..].split("\n[").next().unwrap_or("");
        let written = body.lines().any(|l| {
            l.trim_start_matches("# ")
                .starts_with(&format!("{field} = "))
        });
        assert!(written, "example() does not show {key}");

        let var = format!(
            "WORMFS_{}__{}",
            section.to_uppercase(),
            field.to_uppercase()
        );
        let value = match *key {
            "api.listen" => "127.0.0.1:1",
            "webdav.listen" => "127.0.0.1:2",
            "storage.disks" => "/x,/y",
            "storage.default_policy" | "storage.small_file_policy" => "copies:2",
            "storage.conflict" => "replace",
            "log.format" => "json",
            "node.name" | "node.cluster_name" | "log.level" | "node.data_dir" => "abc",
            "storage.block_size_bytes" => "4096",
            "storage.segment_part_bytes" => "524288",
            "raft.election_timeout_max_ms" => "100000",
            "raft.heartbeat_interval_ms" => "1",
            "raft.election_timeout_min_ms" => "300",
            "ingest.orphan_grace_ms" => "1000000",
            "webdav.anonymous" => "ro",
            "webdav.macos_metadata" => "discard",
            "webdav.advertise" => "false",
            "discovery.mdns" => "true",
            "cluster.peer_listen" => "127.0.0.1:3",
            "cluster.data_listen" => "127.0.0.1:4",
            "cluster.peers" => "a:1,b:2",
            "cluster.secret_file" => "/s",
            "admin.metrics_token_file" => "/t",
            "cluster.voter_replace_after_ms" => "86400000",
            "webdav.users" => "ann:ro:$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            "webdav.tls_cert" | "webdav.tls_key" => "/x.pem",
            "repair.enabled" | "scrub.enabled" | "repair.auto_rebalance" => "false",
            "scrub.hours" => "01:00-06:00",
            "repair.retry_max_ms" => "100000000",
            "meta.backup_interval_ms" => "60000",
            "alerts.webhooks" => "ntfy=https://ntfy.sh/t,http://127.0.0.1:9/hook",
            _ => "3",
        };
        let mut vars = vec![(var.clone(), value)];
        // HTTPS needs both files: set the other one too.
        if let Some(other) = match *key {
            "webdav.tls_cert" => Some("WORMFS_WEBDAV__TLS_KEY"),
            "webdav.tls_key" => Some("WORMFS_WEBDAV__TLS_CERT"),
            _ => None,
        } {
            vars.push((other.to_owned(), "/y.pem"));
        }
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let result = load(None, env(&vars), &Overrides::default());
        assert!(result.is_ok(), "{var}={value}: {result:?}");
    }
}

#[test]
fn unknown_key_names_key_and_line() {
    let (err, message) =
        error_of("[node]\ncluster_name = \"a\"\n\n[storage]\nblok_size_bytes = 4096\n");
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(message.contains("line 5"), "{message}");
    assert!(message.contains("blok_size_bytes"), "{message}");
    assert!(message.contains("wormfs.toml"), "{message}");

    let (_, message) = error_of("cluster_name = \"a\"\n");
    assert!(
        message.contains("line 1") && message.contains("cluster_name"),
        "{message}"
    );
}

#[test]
fn mistyped_values_name_key_and_line() {
    let (err, message) = error_of("[storage]\n\nblock_size_bytes = \"big\"\n");
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("storage.block_size_bytes"), "{message}");
    assert!(message.contains("expected a whole number"), "{message}");

    let (_, message) = error_of("[storage]\ndefault_policy = \"ec:4+x\"\n");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("storage.default_policy"), "{message}");
    assert!(
        message.contains(r#"invalid policy "ec:4+x": expected "auto", "ec:K+M" or "copies:N""#),
        "{message}"
    );

    let (_, message) = error_of("[storage]\nconflict = \"merge\"\n");
    assert!(
        message.contains("line 2") && message.contains("storage.conflict"),
        "{message}"
    );

    let (_, message) = error_of("[storage]\nwrite_quorum_extra = 300\n");
    assert!(
        message.contains("line 2") && message.contains("write_quorum_extra"),
        "{message}"
    );
}

#[test]
fn block_size_not_multiple_of_64_is_refused_with_line() {
    let (err, message) = error_of("[node]\n\n[storage]\n# comment\nblock_size_bytes = 4100\n");
    match &err {
        ConfigError::Invalid { key, line, .. } => {
            assert_eq!(key, "storage.block_size_bytes");
            assert_eq!(*line, Some(5));
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(
        message.ends_with(
            "wormfs.toml line 5: storage.block_size_bytes: must be a multiple of 64, got 4100"
        ),
        "{message}"
    );
    // Dotted and inline forms are located too.
    let (_, message) = error_of("storage.block_size_bytes = 1000\n");
    assert!(
        message.contains("line 1: storage.block_size_bytes"),
        "{message}"
    );
    let (_, message) = error_of("\nstorage = { block_size_bytes = 2048 }\n");
    assert!(
        message.contains("line 2: storage.block_size_bytes: must be between"),
        "{message}"
    );
}

#[test]
fn other_semantic_checks() {
    for (text, key) in [
        (
            "[storage]\nsegment_part_bytes = 1000\n",
            "storage.segment_part_bytes",
        ),
        (
            "[storage]\nsegment_part_bytes = 0\n",
            "storage.segment_part_bytes",
        ),
        (
            "[storage]\nsegment_part_bytes = 2147483648\n",
            "storage.segment_part_bytes",
        ),
        (
            "[storage]\nblock_size_bytes = 33554432\n",
            "storage.block_size_bytes",
        ),
        (
            "[raft]\nelection_timeout_max_ms = 1500\n",
            "raft.election_timeout_max_ms",
        ),
        (
            "[raft]\nheartbeat_interval_ms = 1500\n",
            "raft.heartbeat_interval_ms",
        ),
        ("[node]\ncluster_name = \"Home\"\n", "node.cluster_name"),
        ("[node]\ncluster_name = \"\"\n", "node.cluster_name"),
        ("[ingest]\norphan_grace_ms = 1\n", "ingest.orphan_grace_ms"),
        ("[log]\nlevel = \"\"\n", "log.level"),
    ] {
        match load_text(text) {
            Err(ConfigError::Invalid { key: got, line, .. }) => {
                assert_eq!(got, key, "{text}");
                assert_eq!(line, Some(2), "{text}");
            }
            other => panic!("{text}: expected Invalid for {key}, got {other:?}"),
        }
    }
    // A rule between two keys blames the one the user set.
    match load_text("[storage]\nblock_size_bytes = 4160\n") {
        Err(ConfigError::Invalid {
            key, line, message, ..
        }) => {
            assert_eq!(key, "storage.block_size_bytes");
            assert_eq!(line, Some(2));
            assert!(message.contains("must be a multiple of"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let err = load(
        None,
        env(&[("WORMFS_RAFT__ELECTION_TIMEOUT_MIN_MS", "100")]),
        &Overrides::default(),
    )
    .expect_err("heartbeat 250 >= min 100");
    assert!(
        matches!(&err, ConfigError::Env { var, .. } if var == "WORMFS_RAFT__ELECTION_TIMEOUT_MIN_MS"),
        "{err:?}"
    );
    let err = load(
        None,
        env(&[("WORMFS_INGEST__LEASE_MS", "700000")]),
        &Overrides::default(),
    )
    .expect_err("grace below lease");
    assert!(err.to_string().contains("WORMFS_INGEST__LEASE_MS"), "{err}");
}

#[test]
fn env_override_works() {
    let (_dir, path) = config_file("[storage]\nblock_size_bytes = 65536\n");
    let config = load(
        Some(&path),
        env(&[
            ("WORMFS_STORAGE__BLOCK_SIZE_BYTES", "131072"),
            ("WORMFS_storage__disks", "/a, /b,"),
            ("WORMFS_API__LISTEN", "127.0.0.1:9000"),
            ("WORMFS_STORAGE__DEFAULT_POLICY", "ec:8+3"),
            ("WORMFS_TOKEN", "secret"),
            ("WORMFS_DATA_DIR", "/ignored"),
            ("HOME", "/root"),
        ]),
        &Overrides::default(),
    )
    .expect("loads");
    assert_eq!(config.storage.block_size_bytes, 131_072);
    assert_eq!(
        config.storage.disks,
        vec![PathBuf::from("/a"), PathBuf::from("/b")]
    );
    assert_eq!(config.api.listen, "127.0.0.1:9000".parse().expect("addr"));
    assert_eq!(config.storage.default_policy, PolicySpec::Ec { k: 8, m: 3 });
    assert_ne!(config.node.data_dir, PathBuf::from("/ignored"));
}

#[test]
fn unknown_env_key_is_an_error() {
    for var in ["WORMFS_X__Y", "WORMFS_STORAGE__BLOCK_SIZE", "WORMFS__X"] {
        match load(None, env(&[(var, "1")]), &Overrides::default()) {
            Err(ConfigError::Env { var: got, message }) => {
                assert_eq!(got, var);
                assert!(message.contains("names no configuration key"), "{message}");
            }
            other => panic!("{var}: expected Env error, got {other:?}"),
        }
    }
    let err = load(
        None,
        env(&[("WORMFS_STORAGE__BLOK", "1")]),
        &Overrides::default(),
    )
    .expect_err("unknown key");
    assert!(
        err.to_string().contains("WORMFS_STORAGE__BLOCK_SIZE_BYTES"),
        "{err}"
    );
}

#[test]
fn bad_env_values_name_the_variable() {
    for (var, value, needle) in [
        (
            "WORMFS_STORAGE__BLOCK_SIZE_BYTES",
            "big",
            "expected a whole number",
        ),
        (
            "WORMFS_STORAGE__BLOCK_SIZE_BYTES",
            "1000",
            "must be a multiple of 64, got 1000",
        ),
        ("WORMFS_STORAGE__WRITE_QUORUM_EXTRA", "300", "out of range"),
        ("WORMFS_STORAGE__DEFAULT_POLICY", "ec:4+x", "invalid policy"),
        ("WORMFS_API__LISTEN", "localhost", "expected an address"),
        ("WORMFS_STORAGE__DISKS", "/a,/a", "listed twice"),
    ] {
        let err =
            load(None, env(&[(var, value)]), &Overrides::default()).expect_err("bad value refused");
        let message = err.to_string();
        assert!(
            matches!(&err, ConfigError::Env { var: got, .. } if got == var),
            "{var}={value}: {err:?}"
        );
        assert!(message.contains(needle), "{var}={value}: {message}");
    }
}

#[test]
fn overrides_beat_env_beat_file() {
    let (_dir, path) =
        config_file("[api]\nlisten = \"10.0.0.1:1\"\n[node]\ndata_dir = \"/file\"\n");
    let vars = env(&[
        ("WORMFS_API__LISTEN", "10.0.0.2:2"),
        ("WORMFS_NODE__DATA_DIR", "/env"),
    ]);

    let file_only = load(Some(&path), no_env(), &Overrides::default()).expect("loads");
    assert_eq!(file_only.api.listen, "10.0.0.1:1".parse().expect("addr"));
    assert_eq!(file_only.node.data_dir, PathBuf::from("/file"));

    let with_env = load(Some(&path), vars.clone(), &Overrides::default()).expect("loads");
    assert_eq!(with_env.api.listen, "10.0.0.2:2".parse().expect("addr"));
    assert_eq!(with_env.node.data_dir, PathBuf::from("/env"));

    let overrides = Overrides {
        data_dir: Some(PathBuf::from("/flag")),
        disks: vec![PathBuf::from("/d1")],
        listen: Some("10.0.0.3:3".parse().expect("addr")),
        ingest: Vec::new(),
        webdav_listen: None,
        anonymous: None,
        mdns: None,
        peer_listen: None,
        data_listen: None,
        peers: Vec::new(),
        secret_file: None,
        log_format: Some(LogFormat::Json),
    };
    let with_flags = load(Some(&path), vars, &overrides).expect("loads");
    assert_eq!(with_flags.log.format, LogFormat::Json);
    assert_eq!(with_flags.api.listen, "10.0.0.3:3".parse().expect("addr"));
    assert_eq!(with_flags.node.data_dir, PathBuf::from("/flag"));
    assert_eq!(with_flags.storage.disks, vec![PathBuf::from("/d1")]);
}

#[test]
fn relative_disk_paths_resolve_against_the_config_folder() {
    let (dir, path) = config_file("[storage]\ndisks = [\"disk-a\", \"./b/\", \"/abs\"]\n");
    let config = load(Some(&path), no_env(), &Overrides::default()).expect("loads");
    assert_eq!(
        config.storage.disks,
        vec![
            dir.path().join("disk-a"),
            dir.path().join("b"),
            PathBuf::from("/abs")
        ]
    );
    // Paths from the environment or flags stay as given (relative to the working directory).
    let config = load(
        Some(&path),
        env(&[("WORMFS_STORAGE__DISKS", "rel")]),
        &Overrides::default(),
    )
    .expect("loads");
    assert_eq!(config.storage.disks, vec![PathBuf::from("rel")]);
}

#[test]
fn a_disk_ending_in_star_is_every_folder_there() {
    let (dir, path) = config_file("[storage]\ndisks = [\"vols/*\"]\n");
    let vols = dir.path().join("vols");
    // No folder yet: refused, naming the key, the line and what to mount.
    std::fs::create_dir_all(&vols).expect("mkdir");
    let err = load(Some(&path), no_env(), &Overrides::default()).expect_err("no folder");
    let message = err.to_string();
    match &err {
        ConfigError::Invalid { key, line, .. } => {
            assert_eq!(key, "storage.disks");
            assert_eq!(*line, Some(2), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(message.contains("matches no folder"), "{message}");
    for name in ["disk2", "disk1", ".hidden", "disk10"] {
        std::fs::create_dir_all(vols.join(name)).expect("mkdir");
    }
    std::fs::write(vols.join("a-file"), b"x").expect("write");
    let config = load(Some(&path), no_env(), &Overrides::default()).expect("loads");
    assert_eq!(
        config.storage.disks,
        vec![vols.join("disk1"), vols.join("disk10"), vols.join("disk2")]
    );
    // From the environment too, beside a plain entry (listed twice is still refused).
    let glob = format!("{}/*,/other", vols.display());
    let config = load(
        Some(&path),
        env(&[("WORMFS_STORAGE__DISKS", glob.as_str())]),
        &Overrides::default(),
    )
    .expect("loads");
    assert_eq!(config.storage.disks.len(), 4);
    let twice = format!("{}/*,{}", vols.display(), vols.join("disk1").display());
    let err = load(
        Some(&path),
        env(&[("WORMFS_STORAGE__DISKS", twice.as_str())]),
        &Overrides::default(),
    )
    .expect_err("twice");
    assert!(err.to_string().contains("listed twice"), "{err}");
}

#[test]
fn duplicate_disks_are_refused() {
    let (err, message) =
        error_of("[storage]\ndisks = [\n  \"/mnt/a\",\n  \"/mnt/b\",\n  \"/mnt/a/\",\n]\n");
    match &err {
        ConfigError::Invalid { key, line, .. } => {
            assert_eq!(key, "storage.disks");
            assert_eq!(*line, Some(5), "{message}");
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(message.contains("listed twice"), "{message}");

    // Relative and absolute spellings of the same folder are the same disk.
    let (dir, path) = config_file("");
    let abs = dir.path().join("d");
    fs::write(
        &path,
        format!(
            "[storage]\ndisks = [\"d\", {:?}]\n",
            abs.display().to_string()
        ),
    )
    .expect("write");
    let err = load(Some(&path), no_env(), &Overrides::default()).expect_err("duplicate");
    assert!(err.to_string().contains("listed twice"), "{err}");

    let overrides = Overrides {
        disks: vec![PathBuf::from("/x"), PathBuf::from("/x")],
        ..Overrides::default()
    };
    let err = load(None, no_env(), &overrides).expect_err("duplicate flags");
    assert!(err.to_string().contains("--disk"), "{err}");
}

#[test]
fn missing_file_is_a_read_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent.toml");
    let err = load(Some(Path::new(&path)), no_env(), &Overrides::default()).expect_err("missing");
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
}

#[test]
fn drop_folders_parse_with_defaults_and_resolve_paths() {
    let (dir, path) = config_file(
        "[[ingest.folders]]\npath = \"drop\"\ntree = \"/films/\"\nafter = \"move\"\ndone_dir = \"done\"\n\n[[ingest.folders]]\npath = \"/mnt/smb/in\"\npoll = true\nconflict = \"skip\"\n",
    );
    let c = load(Some(&path), no_env(), &Overrides::default()).expect("loads");
    let f = &c.ingest.folders;
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].path, dir.path().join("drop"));
    assert_eq!(f[0].tree, "/films");
    assert_eq!(f[0].after, AfterIngest::Move);
    assert_eq!(f[0].done_dir, Some(dir.path().join("done")));
    assert_eq!(f[0].conflict, ConflictRule::Rename);
    assert_eq!(f[0].settle_ms, 5_000);
    assert!(!f[0].poll);
    assert_eq!(f[1].tree, "/");
    assert!(f[1].poll);
    assert_eq!(f[1].conflict, ConflictRule::Skip);
    assert_eq!(f[1].after, AfterIngest::Delete);
    // The command line replaces the file's list.
    let o = Overrides {
        ingest: vec!["/srv/a=/music".to_owned(), "/srv/b".to_owned()],
        ..Overrides::default()
    };
    let c = load(Some(&path), no_env(), &o).expect("loads");
    assert_eq!(c.ingest.folders.len(), 2);
    assert_eq!(c.ingest.folders[0].path, PathBuf::from("/srv/a"));
    assert_eq!(c.ingest.folders[0].tree, "/music");
    assert_eq!(c.ingest.folders[1].tree, "/");
    // And the environment too.
    let c = load(
        None,
        env(&[("WORMFS_INGEST__FOLDERS", "/x=/y,/z")]),
        &Overrides::default(),
    )
    .expect("loads");
    assert_eq!(c.ingest.folders.len(), 2);
    assert_eq!(c.ingest.folders[0].tree, "/y");
}

#[test]
fn drop_folder_mistakes_name_the_key_and_line() {
    let (_, msg) = error_of("[ingest]\n\n[[ingest.folders]]\npath = \"/a\"\naftr = \"keep\"\n");
    assert!(msg.contains("line 5") && msg.contains("aftr"), "{msg}");
    let (_, msg) = error_of("[[ingest.folders]]\npath = \"/a\"\nafter = \"shred\"\n");
    assert!(
        msg.contains("line 3") && msg.contains("\"delete\", \"move\" or \"keep\""),
        "{msg}"
    );
    let (_, msg) = error_of("\n[[ingest.folders]]\npath = \"/a\"\nafter = \"move\"\n");
    assert!(
        msg.contains("line 2") && msg.contains("ingest.folders") && msg.contains("done_dir"),
        "{msg}"
    );
    let (_, msg) = error_of("[[ingest.folders]]\npath = \"/a\"\ntree = \"films/../x\"\n");
    assert!(msg.contains("tree"), "{msg}");
    let (_, msg) =
        error_of("[[ingest.folders]]\npath = \"/a\"\n[[ingest.folders]]\npath = \"/a/b\"\n");
    assert!(
        msg.contains("line 3") && msg.contains("inside one another"),
        "{msg}"
    );
    let (_, msg) =
        error_of("[node]\ndata_dir = \"/srv/w\"\n[[ingest.folders]]\npath = \"/srv/w/drop\"\n");
    assert!(msg.contains("data folder"), "{msg}");
}

#[test]
fn webdav_users_are_checked_naming_the_line() {
    let (err, message) = error_of(
        "[webdav]\nanonymous = \"ro\"\n\n[[webdav.users]]\nname = \"ann\"\npassword_hash = \"hunter2\"\n",
    );
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
    assert!(message.contains("webdav.users"), "{message}");
    assert!(message.contains("line 4"), "{message}");
    assert!(message.contains("not a password"), "{message}");
    let (_, message) = error_of("[webdav]\nanonymous = \"yes\"\n");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("\"off\", \"ro\" or \"rw\""), "{message}");
    let (_, message) = error_of("[webdav]\ntls_cert = \"c.pem\"\n");
    assert!(message.contains("webdav.tls_cert"), "{message}");
    assert!(message.contains("tls_key"), "{message}");
}

#[test]
fn mdns_is_off_embedded_on_for_a_file_and_switchable() {
    let embedded = load(None, no_env(), &Overrides::default()).expect("loads");
    assert!(!embedded.discovery.mdns);
    assert!(embedded.webdav.advertise);
    let file = load_text("").expect("loads");
    assert!(file.discovery.mdns);
    let off = load_text("[discovery]\nmdns = false\n[webdav]\nadvertise = false\n").expect("loads");
    assert!(!off.discovery.mdns);
    assert!(!off.webdav.advertise);
    let (_dir, path) = config_file("[discovery]\nmdns = false\n");
    let on_by_env = load(
        Some(&path),
        env(&[("WORMFS_DISCOVERY__MDNS", "on")]),
        &Overrides::default(),
    )
    .expect("loads");
    assert!(on_by_env.discovery.mdns);
    let flag = Overrides {
        mdns: Some(false),
        ..Overrides::default()
    };
    let off_by_flag =
        load(Some(&path), env(&[("WORMFS_DISCOVERY__MDNS", "on")]), &flag).expect("loads");
    assert!(!off_by_flag.discovery.mdns);
    let (_, message) = error_of("[discovery]\nmdns = \"sometimes\"\n");
    assert!(
        message.contains("discovery.mdns") && message.contains("line 2"),
        "{message}"
    );
    let e = load(
        None,
        env(&[("WORMFS_DISCOVERY__MDNS", "maybe")]),
        &Overrides::default(),
    )
    .expect_err("refused");
    assert!(e.to_string().contains("WORMFS_DISCOVERY__MDNS"), "{e}");
}

#[test]
fn cluster_defaults_embedded_and_file_run() {
    let embedded = load(None, no_env(), &Overrides::default()).expect("loads");
    assert_eq!(
        embedded.cluster,
        ClusterConfig {
            peer_listen: "127.0.0.1:7712".parse().expect("addr"),
            data_listen: "127.0.0.1:7713".parse().expect("addr"),
            peers: Vec::new(),
            secret_file: PathBuf::from("./wormfs-data/cluster-secret"),
            formation_wait_ms: 3000,
            voter_replace_after_ms: 120_000,
        }
    );
    assert_eq!(
        embedded.cluster.secret_file,
        embedded.node.data_dir.join("cluster-secret")
    );

    let (dir, path) = config_file("");
    let file = load(Some(&path), no_env(), &Overrides::default()).expect("loads");
    assert_eq!(
        file.cluster,
        ClusterConfig {
            peer_listen: "0.0.0.0:7712".parse().expect("addr"),
            data_listen: "0.0.0.0:7713".parse().expect("addr"),
            peers: Vec::new(),
            secret_file: dir.path().join("wormfs-data").join("cluster-secret"),
            formation_wait_ms: 3000,
            voter_replace_after_ms: 120_000,
        }
    );

    // The default follows node.data_dir, resolved like it.
    let (dir, path) = config_file("[node]\ndata_dir = \"./store/\"\n");
    let moved = load(Some(&path), no_env(), &Overrides::default()).expect("loads");
    assert_eq!(
        moved.cluster.secret_file,
        dir.path().join("store").join("cluster-secret")
    );
    let by_flag = Overrides {
        data_dir: Some(PathBuf::from("/srv/w")),
        ..Overrides::default()
    };
    let moved = load(Some(&path), no_env(), &by_flag).expect("loads");
    assert_eq!(
        moved.cluster.secret_file,
        PathBuf::from("/srv/w/cluster-secret")
    );
}

#[test]
fn cluster_file_values_and_relative_secret_file() {
    let (dir, path) = config_file(
        "[cluster]\npeer_listen = \"0.0.0.0:0\"\ndata_listen = \"[::]:0\"\npeers = [\"nas2.local:7712\", \"192.168.1.20:7712\", \"[fe80::1]:7712\", \"[::1]:1\", \"n-1.lan:65535\"]\nsecret_file = \"secrets/./cluster.key\"\nformation_wait_ms = 0\nvoter_replace_after_ms = 5000\n",
    );
    let config = load(Some(&path), no_env(), &Overrides::default()).expect("loads");
    assert_eq!(
        config.cluster,
        ClusterConfig {
            peer_listen: "0.0.0.0:0".parse().expect("addr"),
            data_listen: "[::]:0".parse().expect("addr"),
            peers: vec![
                "nas2.local:7712".to_owned(),
                "192.168.1.20:7712".to_owned(),
                "[fe80::1]:7712".to_owned(),
                "[::1]:1".to_owned(),
                "n-1.lan:65535".to_owned(),
            ],
            secret_file: dir.path().join("secrets").join("cluster.key"),
            formation_wait_ms: 0,
            voter_replace_after_ms: 5000,
        }
    );
    // An absolute path stays as written.
    let config = load_text("[cluster]\nsecret_file = \"/etc/wormfs/secret\"\n").expect("loads");
    assert_eq!(
        config.cluster.secret_file,
        PathBuf::from("/etc/wormfs/secret")
    );
    // A relative path from the environment stays relative to the working directory.
    let config = load(
        Some(&path),
        env(&[("WORMFS_CLUSTER__SECRET_FILE", "rel/secret")]),
        &Overrides::default(),
    )
    .expect("loads");
    assert_eq!(config.cluster.secret_file, PathBuf::from("rel/secret"));
    // An empty variable means unset: the default in data_dir.
    let config = load(
        Some(&path),
        env(&[("WORMFS_CLUSTER__SECRET_FILE", "")]),
        &Overrides::default(),
    )
    .expect("loads");
    assert_eq!(
        config.cluster.secret_file,
        config.node.data_dir.join("cluster-secret")
    );
    let (_, message) = error_of("[cluster]\nsecret_file = \"\"\n");
    assert!(
        message.contains("line 2: cluster.secret_file: must not be empty"),
        "{message}"
    );
}

#[test]
fn bad_peer_names_the_key_and_its_line() {
    let (err, message) = error_of("[cluster]\npeers = [\n  \"nas2.local:7712\",\n  \"foo\",\n]\n");
    match &err {
        ConfigError::Invalid { key, line, .. } => {
            assert_eq!(key, "cluster.peers");
            assert_eq!(*line, Some(4), "{message}");
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(
        message.ends_with(
            "wormfs.toml line 4: cluster.peers: must be HOST:PORT like nas2.local:7712 or \
             192.168.1.20:7712, got \"foo\""
        ),
        "{message}"
    );
    for bad in [
        "nas2.local",
        "nas2.local:",
        "nas2.local:0",
        "nas2.local:65536",
        "nas2.local:+80",
        ":7712",
        "fe80::1:7712",
        "[fe80::1]",
        "[nas2.local]:7712",
        "192.168.1.300:7712",
        "nas_2.local:7712",
        "nas2..local:7712",
        "-nas2.local:7712",
        " nas2.local:7712",
        "http://nas2.local:7712",
    ] {
        let text = format!("[cluster]\npeers = [{bad:?}]\n");
        match load_text(&text) {
            Err(ConfigError::Invalid { key, line, .. }) => {
                assert_eq!(key, "cluster.peers", "{bad}");
                assert_eq!(line, Some(2), "{bad}");
            }
            other => panic!("{bad:?}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn bad_listen_address_in_file_names_the_key_and_its_line() {
    for key in ["peer_listen", "data_listen"] {
        let (err, message) = error_of(&format!("[cluster]\n\n{key} = \"nas:7713\"\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert!(
            message.contains("line 3") && message.contains(&format!("cluster.{key}")),
            "{message}"
        );
    }
}

#[test]
fn cluster_peers_from_env_and_errors_name_the_variable() {
    let c = load(
        None,
        env(&[("WORMFS_CLUSTER__PEERS", "a:1,b:2")]),
        &Overrides::default(),
    )
    .expect("loads");
    assert_eq!(c.cluster.peers, vec!["a:1".to_owned(), "b:2".to_owned()]);
    let (_dir, path) = config_file("[cluster]\npeers = [\"c:3\"]\n");
    let c = load(
        Some(&path),
        env(&[("WORMFS_CLUSTER__PEERS", "")]),
        &Overrides::default(),
    )
    .expect("loads");
    assert!(c.cluster.peers.is_empty());
    for (var, value, needle) in [
        ("WORMFS_CLUSTER__PEERS", "a:1,b", "got \"b\""),
        (
            "WORMFS_CLUSTER__PEER_LISTEN",
            "nas:7712",
            "expected an address and port like 0.0.0.0:7712",
        ),
        (
            "WORMFS_CLUSTER__DATA_LISTEN",
            "nas:7713",
            "cluster.data_listen: expected an address and port like 0.0.0.0:7713",
        ),
        (
            "WORMFS_CLUSTER__FORMATION_WAIT_MS",
            "soon",
            "expected a whole number",
        ),
        (
            "WORMFS_CLUSTER__VOTER_REPLACE_AFTER_MS",
            "later",
            "expected a whole number",
        ),
    ] {
        let err =
            load(None, env(&[(var, value)]), &Overrides::default()).expect_err("bad value refused");
        assert!(
            matches!(&err, ConfigError::Env { var: got, .. } if got == var),
            "{var}={value}: {err:?}"
        );
        assert!(err.to_string().contains(needle), "{var}={value}: {err}");
    }
}

#[test]
fn cluster_flags_beat_env_beat_file() {
    let (_dir, path) = config_file(
        "[cluster]\npeer_listen = \"10.0.0.1:1\"\ndata_listen = \"10.0.0.1:11\"\npeers = [\"file:1\"]\nsecret_file = \"/file\"\n",
    );
    let vars = env(&[
        ("WORMFS_CLUSTER__PEER_LISTEN", "10.0.0.2:2"),
        ("WORMFS_CLUSTER__DATA_LISTEN", "10.0.0.2:12"),
        ("WORMFS_CLUSTER__PEERS", "env:2"),
        ("WORMFS_CLUSTER__SECRET_FILE", "/env"),
    ]);

    let file_only = load(Some(&path), no_env(), &Overrides::default()).expect("loads");
    assert_eq!(
        file_only.cluster.peer_listen,
        "10.0.0.1:1".parse().expect("addr")
    );
    assert_eq!(
        file_only.cluster.data_listen,
        "10.0.0.1:11".parse().expect("addr")
    );
    assert_eq!(file_only.cluster.peers, vec!["file:1".to_owned()]);
    assert_eq!(file_only.cluster.secret_file, PathBuf::from("/file"));

    let with_env = load(Some(&path), vars.clone(), &Overrides::default()).expect("loads");
    assert_eq!(
        with_env.cluster.peer_listen,
        "10.0.0.2:2".parse().expect("addr")
    );
    assert_eq!(
        with_env.cluster.data_listen,
        "10.0.0.2:12".parse().expect("addr")
    );
    assert_eq!(with_env.cluster.peers, vec!["env:2".to_owned()]);
    assert_eq!(with_env.cluster.secret_file, PathBuf::from("/env"));

    let flags = Overrides {
        peer_listen: Some("10.0.0.3:3".parse().expect("addr")),
        data_listen: Some("10.0.0.3:13".parse().expect("addr")),
        peers: vec!["flag:3".to_owned(), "[::1]:4".to_owned()],
        secret_file: Some(PathBuf::from("rel/flag")),
        ..Overrides::default()
    };
    let with_flags = load(Some(&path), vars.clone(), &flags).expect("loads");
    assert_eq!(
        with_flags.cluster.peer_listen,
        "10.0.0.3:3".parse().expect("addr")
    );
    assert_eq!(
        with_flags.cluster.data_listen,
        "10.0.0.3:13".parse().expect("addr")
    );
    assert_eq!(
        with_flags.cluster.peers,
        vec!["flag:3".to_owned(), "[::1]:4".to_owned()]
    );
    // A path from a flag stays relative to the working directory.
    assert_eq!(with_flags.cluster.secret_file, PathBuf::from("rel/flag"));

    // An empty --peer list leaves the lower layers' list alone.
    let no_peers = Overrides {
        peers: Vec::new(),
        ..flags.clone()
    };
    let c = load(Some(&path), vars, &no_peers).expect("loads");
    assert_eq!(c.cluster.peers, vec!["env:2".to_owned()]);

    // A bad peer from a flag names the flag.
    let bad = Overrides {
        peers: vec!["nas2".to_owned()],
        ..Overrides::default()
    };
    let err = load(Some(&path), no_env(), &bad).expect_err("bad peer");
    let message = err.to_string();
    assert!(
        matches!(&err, ConfigError::Invalid { key, line: None, .. } if key == "cluster.peers"),
        "{err:?}"
    );
    assert!(message.contains("(given by --peer)"), "{message}");
}

#[test]
fn formation_wait_out_of_range_is_refused() {
    let (err, message) = error_of("[cluster]\n\nformation_wait_ms = 600001\n");
    match &err {
        ConfigError::Invalid { key, line, .. } => {
            assert_eq!(key, "cluster.formation_wait_ms");
            assert_eq!(*line, Some(3));
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(
        message.ends_with(
            "line 3: cluster.formation_wait_ms: must be at most 600000 (10 minutes), got 600001"
        ),
        "{message}"
    );
    assert!(load_text("[cluster]\nformation_wait_ms = 600000\n").is_ok());
    let err = load(
        None,
        env(&[("WORMFS_CLUSTER__FORMATION_WAIT_MS", "9999999")]),
        &Overrides::default(),
    )
    .expect_err("refused");
    assert!(
        err.to_string()
            .contains("WORMFS_CLUSTER__FORMATION_WAIT_MS")
            && err.to_string().contains("must be at most 600000"),
        "{err}"
    );
}

#[test]
fn voter_replace_after_out_of_range_is_refused() {
    for (value, tail) in [
        (
            "4999",
            "line 3: cluster.voter_replace_after_ms: must be at least 5000 (5 s), got 4999",
        ),
        (
            "86400001",
            "line 3: cluster.voter_replace_after_ms: must be at most 86400000 (one day), got 86400001",
        ),
    ] {
        let (err, message) = error_of(&format!("[cluster]\n\nvoter_replace_after_ms = {value}\n"));
        match &err {
            ConfigError::Invalid { key, line, .. } => {
                assert_eq!(key, "cluster.voter_replace_after_ms");
                assert_eq!(*line, Some(3));
            }
            other => panic!("wrong error {other:?}"),
        }
        assert!(message.ends_with(tail), "{message}");
    }
    for ok in ["5000", "86400000"] {
        let text = format!("[cluster]\nvoter_replace_after_ms = {ok}\n");
        assert!(load_text(&text).is_ok(), "{ok}");
    }
    let c = load(
        None,
        env(&[("WORMFS_CLUSTER__VOTER_REPLACE_AFTER_MS", "60000")]),
        &Overrides::default(),
    )
    .expect("loads");
    assert_eq!(c.cluster.voter_replace_after_ms, 60_000);
    for (value, needle) in [
        ("4999", "must be at least 5000 (5 s)"),
        ("86400001", "must be at most 86400000 (one day)"),
    ] {
        let err = load(
            None,
            env(&[("WORMFS_CLUSTER__VOTER_REPLACE_AFTER_MS", value)]),
            &Overrides::default(),
        )
        .expect_err("refused");
        assert!(
            err.to_string()
                .contains("WORMFS_CLUSTER__VOTER_REPLACE_AFTER_MS")
                && err.to_string().contains(needle),
            "{err}"
        );
    }
}

#[test]
fn repair_and_scrub_keys_are_checked_and_the_scrub_window_parsed() {
    let cfg = load_text("[repair]\ndisk_out_after_ms = 2000\ntranquility = 0\n[scrub]\ninterval_days = 0.5\nhours = \"22:30-06:00\"\n")
        .expect("valid");
    assert_eq!(cfg.repair.disk_out_after_ms, 2000);
    assert_eq!(cfg.repair.tranquility, 0);
    assert_eq!(cfg.scrub.interval_ms, 43_200_000);
    let w = cfg.scrub.hours.expect("window");
    assert!(w.contains(23 * 60) && w.contains(60) && !w.contains(12 * 60));
    for (text, key) in [
        ("[scrub]\nhours = \"25:00-01:00\"\n", "scrub.hours"),
        ("[scrub]\nhours = \"01:00-01:00\"\n", "scrub.hours"),
        ("[scrub]\ninterval_days = 0\n", "scrub.interval_days"),
        ("[repair]\ntranquility = 101\n", "repair.tranquility"),
        (
            "[repair]\nretry_min_ms = 10\nretry_max_ms = 5\n",
            "repair.retry_max_ms",
        ),
        (
            "[repair]\ndisk_out_after_ms = 0\n",
            "repair.disk_out_after_ms",
        ),
    ] {
        let e = load_text(text).expect_err(text).to_string();
        assert!(e.contains(key), "{text}: {e}");
        assert!(e.contains("line"), "{text}: {e}");
    }
}

#[test]
fn retention_keys_are_checked_and_min_free_parsed() {
    let cfg = load_text("").expect("defaults");
    assert_eq!(cfg.retention.trash_ms, 30 * 86_400_000);
    assert_eq!(cfg.retention.trash_min_free, MinFree::Basis(500));
    let cfg =
        load_text("[retention]\ntrash_days = 0.5\ntrash_min_free = \"50GiB\"\n").expect("valid");
    assert_eq!(cfg.retention.trash_ms, 43_200_000);
    assert_eq!(cfg.retention.trash_min_free, MinFree::Bytes(50 << 30));
    assert_eq!(
        load_text("[retention]\ntrash_days = 0\n")
            .expect("off")
            .retention
            .trash_ms,
        0
    );
    assert_eq!(MinFree::parse("2.5%"), Ok(MinFree::Basis(250)));
    assert_eq!(MinFree::parse("10 MB"), Ok(MinFree::Bytes(10_000_000)));
    assert_eq!(MinFree::parse("123"), Ok(MinFree::Bytes(123)));
    assert_eq!(MinFree::Basis(500).bytes(1000), 50);
    for (text, key) in [
        ("[retention]\ntrash_days = -1\n", "retention.trash_days"),
        (
            "[retention]\ntrash_min_free = \"lots\"\n",
            "retention.trash_min_free",
        ),
        (
            "[retention]\ntrash_min_free = \"120%\"\n",
            "retention.trash_min_free",
        ),
    ] {
        let e = load_text(text).expect_err(text).to_string();
        assert!(e.contains(key), "{text}: {e}");
        assert!(e.contains("line"), "{text}: {e}");
    }
}

#[test]
fn admin_metrics_token_file_is_resolved_and_checked_naming_key_and_line() {
    // Unset: /metrics is for loopback clients only.
    assert_eq!(load_text("").unwrap().admin.metrics_token_file, None);
    // A relative path is resolved against the config file's folder.
    let (dir, path) = config_file("[admin]\nmetrics_token_file = \"metrics-token\"\n");
    let cfg = load(Some(&path), no_env(), &Overrides::default()).unwrap();
    assert_eq!(
        cfg.admin.metrics_token_file,
        Some(dir.path().join("metrics-token"))
    );
    // Empty, or a typo in the key: an error naming the key and the line.
    let (_, message) = error_of("[admin]\n\nmetrics_token_file = \"\"\n");
    assert!(message.contains("admin.metrics_token_file"), "{message}");
    assert!(message.contains("line 3"), "{message}");
    let (_, message) = error_of("[admin]\nmetrics_tokn_file = \"/t\"\n");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("metrics_tokn_file"), "{message}");
    // The environment sets it too.
    let cfg = load(
        None,
        env(&[("WORMFS_ADMIN__METRICS_TOKEN_FILE", "/run/t")]),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(cfg.admin.metrics_token_file, Some(PathBuf::from("/run/t")));
}

#[test]
fn meta_keys_are_checked_naming_key_and_line() {
    for (toml, key) in [
        (
            "[meta]\nbackup_interval_ms = 10\n",
            "meta.backup_interval_ms",
        ),
        (
            "[meta]\nbackup_after_changes = 0\n",
            "meta.backup_after_changes",
        ),
        ("[meta]\nbackup_keep = 0\n", "meta.backup_keep"),
        ("[meta]\nbackup_keep = 101\n", "meta.backup_keep"),
    ] {
        let (_, message) = error_of(toml);
        assert!(message.contains(key), "{toml}: {message}");
        assert!(message.contains("line 2"), "{toml}: {message}");
    }
    let cfg = load_text("[meta]\nbackup_interval_ms = 0\nbackup_keep = 5\n").unwrap();
    assert_eq!(cfg.meta.backup_interval_ms, 0);
    assert_eq!(cfg.meta.backup_keep, 5);
}

/// The commented-out blocks of the example: runs of lines that are TOML behind one `# `
/// (`key = value`, a `[table]` header, and under a header its own `# # ` comments). Each is
/// (first line index, line count).
fn commented_blocks(text: &str) -> Vec<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let is_code = |l: &str| {
        let Some(rest) = l.strip_prefix("# ") else {
            return false;
        };
        let header = rest.starts_with('[') && rest.trim_end().ends_with(']');
        let assignment = rest.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        });
        header || assignment
    };
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !is_code(lines[i]) {
            i += 1;
            continue;
        }
        let under_header = lines[i].starts_with("# [");
        let start = i;
        i += 1;
        while i < lines.len()
            && (is_code(lines[i]) || (under_header && lines[i].starts_with("# #")))
        {
            i += 1;
        }
        blocks.push((start, i - start));
    }
    blocks
}

#[test]
fn every_commented_block_of_the_example_uncommented_on_its_own_is_a_valid_config() {
    let blocks = commented_blocks(example());
    let lines: Vec<&str> = example().lines().collect();
    let shown: Vec<&str> = blocks.iter().map(|&(s, _)| lines[s]).collect();
    for want in [
        "# [[webdav.users]]",
        "# [[ingest.folders]]",
        "# tls_cert = ",
        "# peers = [\"",
    ] {
        assert!(
            shown.iter().any(|l| l.starts_with(want)),
            "{want} not found among the blocks {shown:?}"
        );
    }
    for (start, len) in blocks {
        let variant: String = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let l = if (start..start + len).contains(&i) {
                    l.strip_prefix("# ").unwrap_or(l)
                } else {
                    l
                };
                format!("{l}\n")
            })
            .collect();
        let block = lines[start..start + len].join("\n");
        // The same load as `wormfs config check`.
        if let Err(e) = load_text(&variant) {
            panic!("the example with this block uncommented does not load: {e}\n{block}");
        }
    }
}

#[test]
fn a_bad_address_names_its_value_key_and_line_for_every_address_key() {
    for (section, key) in [
        ("api", "listen"),
        ("webdav", "listen"),
        ("cluster", "peer_listen"),
        ("cluster", "data_listen"),
    ] {
        for bad in ["0.0.0.0:99999", "nas.local:7710", "7710"] {
            let (_, message) = error_of(&format!("# a comment\n[{section}]\n{key} = \"{bad}\"\n"));
            assert!(
                message.contains(&format!("{section}.{key}"))
                    && message.contains("line 3")
                    && message.contains(bad),
                "{section}.{key} = {bad:?}: {message}"
            );
        }
    }
    let (_, message) = error_of("[api]\nlisten = \"0.0.0.0:99999\"\n");
    assert!(message.contains("65535"), "{message}");
    // The same words from the environment.
    let (_dir, path) = config_file("");
    let err = load(
        Some(&path),
        env(&[("WORMFS_API__LISTEN", "0.0.0.0:99999")]),
        &Overrides::default(),
    )
    .expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains("0.0.0.0:99999") && message.contains("WORMFS_API__LISTEN"),
        "{message}"
    );
}

#[test]
fn alert_webhooks_are_read_from_tables_and_env_and_a_bad_url_names_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wormfs.toml");
    std::fs::write(
        &path,
        "[alerts]\ndebounce_ms = 5000\n\n[[alerts.webhooks]]\nurl = \"https://ntfy.sh/films\"\nformat = \"ntfy\"\ntoken_file = \"ntfy-token\"\n\n[[alerts.webhooks]]\nurl = \"http://10.0.0.2:8080/message\"\nformat = \"gotify\"\nmin_severity = \"critical\"\n",
    )
    .expect("write");
    let c = load(Some(&path), no_env(), &Overrides::default()).expect("loads");
    assert_eq!(c.alerts.debounce_ms, 5000);
    assert_eq!(c.alerts.webhooks.len(), 2);
    let ntfy = &c.alerts.webhooks[0];
    assert_eq!(ntfy.format, WebhookFormat::Ntfy);
    assert_eq!(ntfy.min_severity, AlertSeverity::Warning);
    assert_eq!(
        ntfy.token_file.as_deref(),
        Some(dir.path().join("ntfy-token").as_path())
    );
    assert_eq!(c.alerts.webhooks[1].min_severity, AlertSeverity::Critical);

    let c = load(
        None,
        env(&[(
            "WORMFS_ALERTS__WEBHOOKS",
            "gotify=http://h:1/message, http://h:2/x?a=b",
        )]),
        &Overrides::default(),
    )
    .expect("env loads");
    let w: Vec<(WebhookFormat, &str)> = c
        .alerts
        .webhooks
        .iter()
        .map(|w| (w.format, w.url.as_str()))
        .collect();
    assert_eq!(
        w,
        [
            (WebhookFormat::Gotify, "http://h:1/message"),
            (WebhookFormat::Json, "http://h:2/x?a=b")
        ]
    );

    std::fs::write(
        &path,
        "[[alerts.webhooks]]\nurl = \"https://ntfy.sh/ok\"\n\n[[alerts.webhooks]]\nurl = \"ntfy.sh/films\"\n",
    )
    .expect("write");
    let e = load(Some(&path), no_env(), &Overrides::default())
        .expect_err("a URL without a scheme is refused")
        .to_string();
    assert!(
        e.contains("line 4")
            && e.contains("alerts.webhooks")
            && e.contains("webhook 2")
            && e.contains("ntfy.sh/films"),
        "{e}"
    );
    std::fs::write(
        &path,
        "[[alerts.webhooks]]\nurl = \"http://h/\"\nformat = \"slack\"\n",
    )
    .expect("write");
    let e = load(Some(&path), no_env(), &Overrides::default())
        .expect_err("an unknown format is refused")
        .to_string();
    assert!(e.contains("slack") && e.contains("ntfy"), "{e}");
}

/// A config with one `[[media_servers]]` entry made of `fields` (TOML lines) after two lines
/// of other sections, so the entry's lines are 5 and on.
fn media_server_file(fields: &str) -> String {
    format!("[log]\nlevel = \"info\"\n\n[[media_servers]]\n{fields}")
}

#[test]
fn the_example_shows_every_media_server_field() {
    let start = example()
        .find("# [[media_servers]]")
        .expect("the example shows [[media_servers]]");
    let block = &example()[start..];
    for field in raw::MEDIA_SERVER_KEYS {
        assert!(
            block
                .lines()
                .any(|l| l.starts_with(&format!("# {field} = "))),
            "the example's [[media_servers]] does not show {field}"
        );
    }
    // Every field of the raw entry is in MEDIA_SERVER_KEYS.
    let entry = raw::RawMediaServer {
        kind: MediaServerKind::Plex,
        url: "http://x".into(),
        token_file: "t".into(),
        path_map: [("/a".to_owned(), "/b".to_owned())].into(),
        notify_delay_ms: 1,
    };
    let table = toml::Table::try_from(&entry).expect("serialise an entry");
    let mut fields: Vec<&str> = table.keys().map(String::as_str).collect();
    let mut keys = raw::MEDIA_SERVER_KEYS.to_vec();
    fields.sort_unstable();
    keys.sort_unstable();
    assert_eq!(
        fields, keys,
        "MEDIA_SERVER_KEYS is out of step with RawMediaServer"
    );
}

#[test]
fn media_servers_load_with_defaults_and_the_longest_folder_first() {
    let (dir, path) = config_file(&media_server_file(
        "kind = \"plex\"\nurl = \"http://127.0.0.1:32400/\"\ntoken_file = \"plex-token\"\n\
         path_map = { \"/\" = \"/mnt/wormfs\", \"/Films/\" = \"/media/films\", \
         \"/Films/Kids\" = \"D:\\\\Kids\" }\n",
    ));
    let cfg = load(Some(&path), no_env(), &Overrides::default()).expect("loads");
    assert_eq!(cfg.media_servers.len(), 1);
    let m = &cfg.media_servers[0];
    assert_eq!(m.kind, MediaServerKind::Plex);
    assert_eq!(m.url, "http://127.0.0.1:32400");
    assert_eq!(m.token_file, dir.path().join("plex-token"));
    assert_eq!(m.notify_delay_ms, 60_000);
    let order: Vec<(&str, &str)> = m
        .path_map
        .iter()
        .map(|e| (e.wormfs.as_str(), e.server.as_str()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("/Films/Kids", "D:\\Kids"),
            ("/Films", "/media/films"),
            ("/", "/mnt/wormfs"),
        ]
    );
    assert!(load_text("").expect("empty loads").media_servers.is_empty());
}

#[test]
fn a_bad_media_server_entry_names_its_key_and_line() {
    let base = "kind = \"jellyfin\"\nurl = \"http://127.0.0.1:8096\"\ntoken_file = \"/t\"\n";
    for (fields, key, line, words) in [
        (
            "kind = \"jellyfin\"\nurl = \"nas.local:8096\"\ntoken_file = \"/t\"\npath_map = { \"/a\" = \"/b\" }\n".to_owned(),
            "media_servers[1].url",
            6,
            "http://",
        ),
        (
            format!("{base}path_map = {{ \"Films\" = \"/b\" }}\n"),
            "media_servers[1].path_map",
            8,
            "not absolute",
        ),
        (
            format!("{base}path_map = {{ \"/a/../b\" = \"/b\" }}\n"),
            "media_servers[1].path_map",
            8,
            "\"..\"",
        ),
        (
            format!("{base}path_map = {{ \"/a\" = \"\" }}\n"),
            "media_servers[1].path_map",
            8,
            "server's path",
        ),
        (
            format!("{base}path_map = {{ \"/a\" = \"/x\", \"/a/\" = \"/y\" }}\n"),
            "media_servers[1].path_map",
            8,
            "mapped twice",
        ),
        (base.to_owned(), "media_servers[1].path_map", 4, "at least one"),
        (
            format!("{base}path_map = {{ \"/a\" = \"/b\" }}\nnotify_delay_ms = 99999999999\n"),
            "media_servers[1].notify_delay_ms",
            9,
            "at most",
        ),
    ] {
        let text = media_server_file(&fields);
        let (err, message) = error_of(&text);
        match err {
            ConfigError::Invalid { key: k, line: l, .. } => {
                assert_eq!(k, key, "{text}: {message}");
                assert_eq!(l, Some(line), "{text}: {message}");
            }
            other => panic!("{text}: expected Invalid, got {other:?}"),
        }
        assert!(message.contains(words), "{text}: {message}");
    }
    // Unknown fields and kinds are refused by the parser, with their line.
    for (fields, words) in [
        ("kind = \"emby\"\n", "jellyfin"),
        (
            &format!("{base}path_map = {{ \"/a\" = \"/b\" }}\ndelay = 1\n") as &str,
            "delay",
        ),
    ] {
        let (_, message) = error_of(&media_server_file(fields));
        assert!(message.contains(words), "{fields}: {message}");
        assert!(message.contains("line "), "{fields}: {message}");
    }
}
