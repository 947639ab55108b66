//! A config in a few lines a person reads: what `wormfs config check` prints and what a node
//! logs at start.

use crate::{Config, ConfigSource};

/// How many folder-disks a node makes in its data folder when no disk is listed.
const FOLDER_DISKS: usize = 6;

impl Config {
    /// The config in a few lines: where it came from, the node and its data folder, the
    /// cluster, the disks, the listeners, the drop folders, the policies and the WebDAV users.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.push(format!("config:       {}", self.source_text()));
        out.push(format!(
            "node:         {}{}, data folder {}",
            self.node.name.as_deref().unwrap_or("(the machine's name)"),
            self.node
                .id
                .map(|id| format!(" (id {id})"))
                .unwrap_or_default(),
            self.node.data_dir.display()
        ));
        out.push(format!(
            "cluster:      {}, peers: {}",
            self.node.cluster_name,
            if self.cluster.peers.is_empty() {
                "none listed (mDNS or alone)".to_owned()
            } else {
                self.cluster.peers.join(", ")
            }
        ));
        out.push(format!("disks:        {}", self.disks_text()));
        out.push(format!("listens:      {}", self.listeners_text()));
        out.push(format!(
            "metrics:      /metrics on the API port, {}",
            match &self.admin.metrics_token_file {
                Some(f) => format!("token from {}", f.display()),
                None => "this machine (loopback) only, no token".to_owned(),
            }
        ));
        out.push(format!(
            "drop folders: {}",
            if self.ingest.folders.is_empty() {
                "none".to_owned()
            } else {
                self.ingest
                    .folders
                    .iter()
                    .map(|f| format!("{} -> {}", f.path.display(), f.tree))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        out.push(format!(
            "policies:     {} (files under {} bytes: {}), on a taken name: {}",
            self.storage.default_policy,
            self.storage.small_file_threshold_bytes,
            self.storage.small_file_policy,
            self.storage.conflict
        ));
        out.push(format!(
            "webdav users: {}, anonymous access {}{}",
            match self.webdav.users.len() {
                0 => "none listed here (the cluster's users apply; a new cluster makes \"admin\")"
                    .to_owned(),
                n => format!("{n} listed (imported into the cluster's users at start)"),
            },
            self.webdav.anonymous,
            if self.webdav.tls.is_some() {
                ", TLS on"
            } else {
                ""
            }
        ));
        out.push(format!(
            "media:        {}",
            if self.media_servers.is_empty() {
                "no media server told about changes".to_owned()
            } else {
                self.media_servers
                    .iter()
                    .map(|m| {
                        let folders: Vec<&str> =
                            m.path_map.iter().map(|e| e.wormfs.as_str()).collect();
                        format!("{} {} ({})", m.kind, m.url, folders.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        ));
        out.push(format!(
            "mDNS:         {}",
            if self.discovery.mdns { "on" } else { "off" }
        ));
        out
    }

    /// The config file, or the embedded default.
    pub fn source_text(&self) -> String {
        match &self.source {
            ConfigSource::Embedded => "no config file: the embedded default".to_owned(),
            ConfigSource::File(p) => p.display().to_string(),
        }
    }

    /// The disks: the count and the folders.
    pub fn disks_text(&self) -> String {
        if self.storage.disks.is_empty() {
            format!("{FOLDER_DISKS} folder-disks in the data folder (all on one filesystem)")
        } else {
            format!(
                "{}: {}",
                self.storage.disks.len(),
                self.storage
                    .disks
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    /// Every listen address, named.
    pub fn listeners_text(&self) -> String {
        format!(
            "API {}, WebDAV {}{}, peers {}, data {}",
            self.api.listen,
            self.webdav.listen,
            if self.webdav.tls.is_some() {
                " (https)"
            } else {
                ""
            },
            self.cluster.peer_listen,
            self.cluster.data_listen
        )
    }
}
