//! Recent path lookups of the WebDAV face. dav-server opens a file and asks for its metadata
//! several times per request and reuses nothing across keep-alive requests, so a player's
//! stream of Range GETs would walk the same path through SQLite again and again. An answer
//! here is used only while the metadata generation it was read at is still current: any
//! committed change (from any client, any node) makes every earlier answer stale at once.
//! A folder's answer lives longer: until a change other than a file's ingest or commit
//! ([`Generations::rare`]), since those change no folder that exists. Every PUT asks for its
//! folder, and each commit of four clients uploading into one folder made it stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::collections::VecDeque;

use crate::read::OpenParts;
use wormfs_meta::{DirEntry, FileRecord};
use wormfs_parts::ids::FileId;

/// Paths remembered at most; past that the memory is cleared and starts again.
const MAX_PATHS: usize = 4096;
/// Files whose opened parts are kept between requests (each holds up to k + m descriptors).
const MAX_OPEN_FILES: usize = 16;
/// How long opened parts are reused: a part file removed or a disk pulled meanwhile is noticed
/// within this time even when nothing else changes.
const OPEN_PARTS_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// What a lookup found.
#[derive(Clone)]
pub(crate) struct Found {
    pub entry: DirEntry,
    /// The file's segments and parts, once a read opened it.
    pub file: Option<Arc<FileRecord>>,
}

/// The metadata's generations, read before a lookup began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Generations {
    /// Bumped by every committed change ([`wormfs_meta::MetaDb::generation`]).
    pub all: u64,
    /// Bumped by every change but files' ingests and commits
    /// ([`wormfs_meta::MetaDb::rare_generation`]).
    pub rare: u64,
}

impl Generations {
    /// `meta`'s, now.
    pub fn of(meta: &wormfs_meta::MetaDb) -> Self {
        // Read before the lookup, and bumped after a change is committed: an answer is never
        // older than the generations it is filed under.
        Self {
            all: meta.generation(),
            rare: meta.rare_generation(),
        }
    }

    /// Whether `found`, read at `self`, still holds at `now`.
    fn still_hold(self, found: &Option<Found>, now: Generations) -> bool {
        self.all == now.all
            || (self.rare == now.rare
                && found
                    .as_ref()
                    .is_some_and(|f| matches!(f.entry.kind, wormfs_meta::EntryKind::Dir)))
    }
}

/// A file's opened parts: the file, the generation and time they were opened at.
type SharedParts = (FileId, u64, std::time::Instant, Arc<OpenParts>);

#[derive(Default)]
pub(crate) struct Lookups {
    /// Each path's answer (`None`: nothing there) and the generations it was read at.
    by_path: Mutex<HashMap<String, (Generations, Option<Found>)>>,
    /// The most recently read files' opened parts, newest last, with the generation they
    /// were opened in. A change anywhere drops them all at the next read, and none is kept
    /// longer than [`OPEN_PARTS_FOR`], so a deleted part is not held open for long.
    open_parts: Mutex<VecDeque<SharedParts>>,
}

impl Lookups {
    /// The answer for `path` that still holds at `now`, if there is one: `Some(None)` when
    /// nothing was there (a PUT of a new file asks twice: dav-server's own look, then the
    /// create's).
    pub fn get(&self, path: &str, now: Generations) -> Option<Option<Found>> {
        let map = self.by_path.lock().ok()?;
        match map.get(path) {
            Some((g, f)) if g.still_hold(f, now) => Some(f.clone()),
            _ => None,
        }
    }

    /// The opened parts of `file` to share, current at `generation` (new ones if none).
    pub fn open_parts(&self, file: FileId, generation: u64) -> Arc<OpenParts> {
        let Ok(mut open) = self.open_parts.lock() else {
            return Arc::default();
        };
        let now = std::time::Instant::now();
        open.retain(|(_, g, t, _)| *g == generation && now.duration_since(*t) < OPEN_PARTS_FOR);
        if let Some(i) = open.iter().position(|(f, _, _, _)| *f == file) {
            let entry = open.remove(i).expect("position is in range");
            let parts = entry.3.clone();
            open.push_back(entry);
            return parts;
        }
        let parts = Arc::<OpenParts>::default();
        if open.len() >= MAX_OPEN_FILES {
            open.pop_front();
        }
        open.push_back((file, generation, now, parts.clone()));
        parts
    }

    /// Remembers that nothing is at `path`, as read at `generations` (read before the lookup
    /// began).
    pub fn put_missing(&self, path: &str, generations: Generations) {
        self.remember(path, generations, None);
    }

    /// Remembers `found` for `path`, as read at `generations` (read before the lookup began).
    pub fn put(&self, path: &str, generations: Generations, found: Found) {
        self.remember(path, generations, Some(found));
    }

    fn remember(&self, path: &str, generation: Generations, found: Option<Found>) {
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

    fn gens(all: u64, rare: u64) -> Generations {
        Generations { all, rare }
    }

    fn entry(name: &str, kind: wormfs_meta::EntryKind) -> Found {
        let entry = DirEntry {
            name: name.into(),
            kind,
            size: 0,
            mtime_ms: 0,
            policy: None,
            file_id: None,
            etag: None,
        };
        Found { entry, file: None }
    }

    #[test]
    fn an_answer_lives_only_in_its_generation() {
        use wormfs_meta::EntryKind::{Dir, File};
        let l = Lookups::default();
        l.put("/a", gens(7, 3), entry("a", File));
        assert!(matches!(l.get("/a", gens(7, 3)), Some(Some(_))));
        assert!(
            l.get("/a", gens(8, 3)).is_none(),
            "a file's answer: any change"
        );
        assert!(l.get("/b", gens(7, 3)).is_none());
        // Nothing there is an answer too, as short-lived.
        l.put_missing("/b", gens(7, 3));
        assert!(matches!(l.get("/b", gens(7, 3)), Some(None)));
        assert!(
            l.get("/b", gens(8, 3)).is_none(),
            "a commit may have made it"
        );
        // A folder's answer outlives files' commits, not any other change.
        l.put("/d", gens(7, 3), entry("d", Dir));
        assert!(matches!(l.get("/d", gens(9, 3)), Some(Some(_))));
        assert!(
            l.get("/d", gens(10, 4)).is_none(),
            "a rare change: read again"
        );
    }

    #[test]
    fn opened_parts_are_shared_within_a_generation_and_bounded() {
        let l = Lookups::default();
        let f = FileId::from_bytes([1; 16]);
        let a = l.open_parts(f, 1);
        assert!(Arc::ptr_eq(&a, &l.open_parts(f, 1)));
        assert!(!Arc::ptr_eq(&a, &l.open_parts(f, 2)), "a change drops them");
        for i in 0..(MAX_OPEN_FILES as u8 + 4) {
            l.open_parts(FileId::from_bytes([i + 10; 16]), 2);
        }
        assert_eq!(l.open_parts.lock().unwrap().len(), MAX_OPEN_FILES);
    }
}
