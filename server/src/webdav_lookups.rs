//! Recent path lookups of the WebDAV face. dav-server opens a file and asks for its metadata
//! several times per request and reuses nothing across keep-alive requests, so a player's
//! stream of Range GETs would walk the same path through SQLite again and again. An answer
//! here is used only while the metadata generation it was read at is still current: any
//! committed change (from any client, any node) makes every earlier answer stale at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::meta::{DirEntry, FileRecord};

/// Paths remembered at most; past that the memory is cleared and starts again.
const MAX_PATHS: usize = 4096;

/// What a lookup found.
#[derive(Clone)]
pub(crate) struct Found {
    pub entry: DirEntry,
    /// The file's segments and parts, once a read opened it.
    pub file: Option<Arc<FileRecord>>,
}

#[derive(Default)]
pub(crate) struct Lookups {
    by_path: Mutex<HashMap<String, (u64, Found)>>,
}

impl Lookups {
    /// The answer for `path` read at `generation`, if there is one.
    pub fn get(&self, path: &str, generation: u64) -> Option<Found> {
        let map = self.by_path.lock().ok()?;
        match map.get(path) {
            Some((g, f)) if *g == generation => Some(f.clone()),
            _ => None,
        }
    }

    /// Remembers `found` for `path`, as read at `generation` (read before the lookup began).
    pub fn put(&self, path: &str, generation: u64, found: Found) {
        if let Ok(mut map) = self.by_path.lock() {
            if map.len() >= MAX_PATHS {
                map.clear();
            }
            map.insert(path.to_owned(), (generation, found));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_lives_only_in_its_generation() {
        let l = Lookups::default();
        let entry = DirEntry {
            name: "a".into(),
            kind: crate::meta::EntryKind::Dir,
            size: 0,
            mtime_ms: 0,
            policy: None,
            file_id: None,
            etag: None,
        };
        l.put("/a", 7, Found { entry, file: None });
        assert!(l.get("/a", 7).is_some());
        assert!(l.get("/a", 8).is_none());
        assert!(l.get("/b", 7).is_none());
    }
}
