//! openraft's storage test suite against WormFS's SQLite log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use wormfs_meta::raft_types::TypeConfig;
use wormfs_meta::{LogStore, MetaDb, StateMachineStore};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("raft-log.db"))
            .await
            .expect("open log");
        let db = MetaDb::open(&dir.path().join("metadata.db"))
            .await
            .expect("open metadata");
        let sm = StateMachineStore::new(db, dir.path().join("snapshots"))
            .await
            .expect("state machine");
        Ok((dir, log, sm))
    }
}

/// The log store and state machine pass every check of `openraft::testing::Suite`.
#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).expect("storage suite");
}
