//! Reading the cluster's events (written by [`crate::apply_events`]).

use super::MetaDb;
use crate::apply_events::EventRecord;
use crate::command::EventSeverity;
use crate::error::{DbContext, Res};
use crate::row::Cols;

impl MetaDb {
    /// Up to `limit` events, newest first: those with an id below `before` (older ones, for
    /// paging back) or above `after` (newer ones, for following), else the newest.
    pub async fn events(
        &self,
        limit: u32,
        before: Option<u64>,
        after: Option<u64>,
    ) -> Res<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, kind, severity, node, disk, path, message FROM events
              WHERE id < ? AND id > ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64))
        .bind(after.map_or(0, |a| a.min(i64::MAX as u64) as i64))
        .bind(i64::from(limit))
        .fetch_all(&self.pool())
        .await
        .db("read events")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "events").key_col("id", 0);
                let severity: String = r.col(3, "severity")?;
                Ok(EventRecord {
                    id: r.int(0, "id")?,
                    at_ms: r.int(1, "at_ms")?,
                    kind: r.col(2, "kind")?,
                    severity: EventSeverity::parse(&severity)
                        .ok_or_else(|| r.corrupt("severity", format!("{severity:?}")))?,
                    node: r.opt_int(4, "node")?,
                    disk: r.col(5, "disk")?,
                    path: r.col(6, "path")?,
                    message: r.col(7, "message")?,
                })
            })
            .collect()
    }

    /// How many events of these kinds have an id above `after`.
    pub async fn count_events_after(&self, after: u64, kinds: &[&str]) -> Res<u64> {
        let kinds = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".to_owned());
        let r = sqlx::query(
            "SELECT COUNT(*) FROM events WHERE id > ? AND kind IN (SELECT value FROM json_each(?))",
        )
        .bind(after.min(i64::MAX as u64) as i64)
        .bind(kinds)
        .fetch_one(&self.pool())
        .await
        .db("count events")?;
        Cols::new(&r, "events").key("count").int(0, "count")
    }
}
