//! Raft nodes in one process: each with its own SQLite log, namespace database and snapshot
//! folder in a temporary directory, WormFS's storage and Raft configuration, and the router as
//! its network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, RaftMetrics, ServerState};
use sqlx::Row;
use wormfs_config::RaftConfig;
use wormfs_meta::command::{Command, CommandV1, Outcome};
use wormfs_meta::raft_types::TypeConfig;
use wormfs_meta::{LogStore, MetaDb, StateMachineStore};
use wormfs_server::consensus::raft_config;

use super::router::Router;

pub type NodeId = u64;

/// A generous deadline for anything Raft should do in well under a second.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Raft timing for the suite: fast, as a LAN would allow.
pub fn test_raft_config(snapshot_every: u64, keep: u64) -> RaftConfig {
    RaftConfig {
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_every_logs: snapshot_every,
        max_logs_kept: keep,
    }
}

/// One node's running parts.
pub struct Node {
    pub raft: Raft<TypeConfig>,
    pub db: MetaDb,
    log: LogStore,
}

/// The nodes, their folders and the router between them.
pub struct TestCluster {
    pub router: Router,
    cfg: RaftConfig,
    dir: tempfile::TempDir,
    pub nodes: BTreeMap<NodeId, Node>,
}

impl TestCluster {
    pub fn new(cfg: RaftConfig) -> Self {
        TestCluster {
            router: Router::default(),
            cfg,
            dir: tempfile::tempdir().expect("tempdir"),
            nodes: BTreeMap::new(),
        }
    }

    fn folder(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Starts node `id` on its folder (new, or as a stopped node left it).
    pub async fn start(&mut self, id: NodeId) {
        let dir = self.folder(id);
        std::fs::create_dir_all(&dir).expect("node folder");
        let log = LogStore::open(&dir.join("raft-log.db"))
            .await
            .expect("open log");
        let db = MetaDb::open(&dir.join("metadata.db"))
            .await
            .expect("open metadata");
        let sm = StateMachineStore::new(db.clone(), dir.join("snapshots"))
            .await
            .expect("state machine");
        let config = raft_config("in-process", &self.cfg).expect("raft config");
        let raft = Raft::new(
            id,
            Arc::new(config),
            self.router.network_of(id),
            log.clone(),
            sm,
        )
        .await
        .expect("start raft");
        self.router.connect(id, raft.clone());
        self.nodes.insert(id, Node { raft, db, log });
    }

    /// Stops node `id` as a clean shutdown does; its folder stays.
    pub async fn stop(&mut self, id: NodeId) {
        self.router.disconnect(id);
        let node = self.nodes.remove(&id).expect("node running");
        node.raft.shutdown().await.expect("raft shutdown");
        node.log.close().await;
        node.db.close().await;
    }

    /// The vote (term and candidate) stopped node `id` keeps in its log database.
    pub async fn saved_vote(&self, id: NodeId) -> Option<openraft::Vote<NodeId>> {
        use openraft::storage::RaftLogStorage;
        let mut log = LogStore::open(&self.folder(id).join("raft-log.db"))
            .await
            .expect("open log");
        let vote = log.read_vote().await.expect("read vote");
        log.close().await;
        vote
    }

    pub fn raft(&self, id: NodeId) -> &Raft<TypeConfig> {
        &self.nodes[&id].raft
    }

    pub fn metrics(&self, id: NodeId) -> RaftMetrics<NodeId, BasicNode> {
        self.raft(id).metrics().borrow().clone()
    }

    /// Starts nodes `ids` and makes them one cluster of voters.
    pub async fn start_voters(&mut self, ids: &[NodeId]) {
        for id in ids {
            self.start(*id).await;
        }
        let members: BTreeMap<NodeId, BasicNode> =
            ids.iter().map(|id| (*id, node_addr(*id))).collect();
        self.raft(ids[0])
            .initialize(members)
            .await
            .expect("initialize");
        self.wait_for_leader(ids).await;
    }

    /// Waits until every node in `ids` agrees on one leader among them; returns it.
    pub async fn wait_for_leader(&self, ids: &[NodeId]) -> NodeId {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let leaders: BTreeSet<Option<NodeId>> = ids
                .iter()
                .map(|id| self.metrics(*id).current_leader)
                .collect();
            if let [Some(l)] = leaders.iter().collect::<Vec<_>>()[..] {
                if ids.contains(l) && self.metrics(*l).state == ServerState::Leader {
                    return *l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single leader among {ids:?} within {DEADLINE:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Proposes `cmd` through node `via`, following its redirects to the leader, retrying
    /// through elections until the deadline. Returns the outcome and the log index.
    pub async fn write(&self, via: NodeId, cmd: CommandV1) -> (Outcome, u64) {
        let deadline = Instant::now() + DEADLINE;
        let mut target = via;
        loop {
            let raft = self.raft(target);
            let res = tokio::time::timeout(
                Duration::from_secs(5),
                raft.client_write(Command::V1(cmd.clone())),
            )
            .await;
            match res {
                Ok(Ok(r)) => return (r.data, r.log_id.index),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    if let Some(l) = f.leader_id.filter(|l| self.nodes.contains_key(l)) {
                        target = l;
                    }
                }
                Ok(Err(e)) => panic!("write through node {target} failed: {e}"),
                // A leader cut off from its majority: ask `via` again for the current one.
                Err(_) => target = via,
            }
            assert!(
                Instant::now() < deadline,
                "write through node {via} not committed within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Self::write`]s `mkdir(n)` for every `n` of `ns` through `via`; the last log index.
    pub async fn write_many(&self, via: NodeId, ns: impl IntoIterator<Item = u64>) -> u64 {
        let mut last = 0;
        for n in ns {
            last = self.write(via, mkdir(n)).await.1;
        }
        last
    }

    /// Waits until node `id` has applied log index `index`.
    pub async fn wait_applied(&self, id: NodeId, index: u64) {
        self.raft(id)
            .wait(Some(DEADLINE))
            .applied_index_at_least(Some(index), "applied")
            .await
            .unwrap_or_else(|e| panic!("node {id} did not apply index {index}: {e}"));
    }

    /// Every row of node `id`'s namespace database, as sorted text per table.
    pub async fn dump(&self, id: NodeId) -> BTreeMap<String, Vec<String>> {
        let pool = self.nodes[&id].db.pool();
        let tables = strings(
            &pool,
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name != '_sqlx_migrations'"
                .into(),
        )
        .await;
        let mut out = BTreeMap::new();
        for t in tables {
            let cols = strings(&pool, format!("SELECT name FROM pragma_table_info('{t}')")).await;
            let expr = cols
                .iter()
                .map(|c| format!("quote(\"{c}\")"))
                .collect::<Vec<_>>()
                .join(" || '|' || ");
            let mut rows = strings(&pool, format!("SELECT {expr} FROM \"{t}\"")).await;
            rows.sort();
            out.insert(t, rows);
        }
        out
    }

    /// Asserts that nodes `ids` have applied `index` and hold identical databases.
    pub async fn assert_converged(&self, ids: &[NodeId], index: u64) {
        for id in ids {
            self.wait_applied(*id, index).await;
        }
        let first = self.dump(ids[0]).await;
        for id in &ids[1..] {
            let other = self.dump(*id).await;
            for (table, rows) in &first {
                let theirs: BTreeSet<&String> = other.get(table).into_iter().flatten().collect();
                let ours: BTreeSet<&String> = rows.iter().collect();
                let only = |a: &BTreeSet<&String>, b: &BTreeSet<&String>| -> Vec<String> {
                    a.difference(b).take(5).map(|r| r.to_string()).collect()
                };
                assert!(
                    ours == theirs && other.get(table).map(Vec::len) == Some(rows.len()),
                    "table {table} differs between node {} ({} rows) and node {id} ({} rows); \
                     only on the first (up to 5): {:?}; only on the other: {:?}",
                    ids[0],
                    rows.len(),
                    other.get(table).map_or(0, Vec::len),
                    only(&ours, &theirs),
                    only(&theirs, &ours),
                );
            }
        }
    }
}

/// The address a member records (unused by the router, shown as a machine's would be).
pub fn node_addr(id: NodeId) -> BasicNode {
    BasicNode::new(format!("in-process-{id}"))
}

/// A directory-creating command, distinct per `n`.
pub fn mkdir(n: u64) -> CommandV1 {
    CommandV1::Mkdir {
        path: format!("/d{n:05}"),
        parents: false,
        time_ms: 1_700_000_000_000 + n,
    }
}

/// The directory names in node `id`'s root.
pub async fn root_names(c: &TestCluster, id: NodeId) -> BTreeSet<String> {
    let pool = c.nodes[&id].db.pool();
    strings(
        &pool,
        "SELECT name FROM entries WHERE name LIKE 'd%'".into(),
    )
    .await
    .into_iter()
    .collect()
}

/// The first column of every row `sql` returns, as text.
async fn strings(pool: &sqlx::SqlitePool, sql: String) -> Vec<String> {
    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect()
}
