//! The mount's picture of the tree: inode numbers for the paths the kernel has seen, their
//! attributes, and listings cached while the change feed is followed.
//!
//! A directory's inode is its path; a file's is its path and entity tag, so a file replaced at
//! the same path is a new inode and the page cache kept for the old one (`FOPEN_KEEP_CACHE`) is
//! never served for the new bytes. Inodes are never reused; the kernel's `forget` is ignored (a
//! few hundred bytes per entry seen).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use wormfs_meta::{DirEntry, EntryKind};

/// The mount root's inode.
pub const ROOT: u64 = 1;

/// What the mount knows of an inode.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its WormFS path (absolute).
    pub path: String,
    /// Its parent's inode (the root is its own parent).
    pub parent: u64,
    /// Its name in the parent.
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Bytes (0 for a directory).
    pub size: u64,
    /// Last change, ms since the epoch.
    pub mtime_ms: u64,
    /// The file's entity tag.
    pub etag: Option<String>,
}

/// A directory's entry as the mount lists it.
#[derive(Clone, Debug)]
pub struct Child {
    /// The name.
    pub name: String,
    /// Its inode.
    pub ino: u64,
    /// File or directory.
    pub kind: EntryKind,
}

/// A directory's entries, in the node's order (by name).
pub type Listing = Arc<Vec<Child>>;

/// The inode table and the listing cache.
pub struct Tree {
    root: String,
    inner: Mutex<Inner>,
}

struct Inner {
    nodes: HashMap<u64, Node>,
    /// Inodes by key, sorted so everything below a path is one range.
    keys: BTreeMap<String, u64>,
    next: u64,
    /// Bumped by every change, reset and loss of the feed: a listing asked for before it
    /// moved may be older than the change and is not cached.
    generation: u64,
    /// Listings by WormFS path, kept only while the change feed is followed.
    listings: HashMap<String, Listing>,
    in_sync: bool,
}

/// What the kernel must forget after a change: cached names, and cached attributes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forget {
    /// `(parent inode, name)` pairs to drop from the kernel's name cache.
    pub entries: Vec<(u64, String)>,
    /// Inodes whose attributes (a directory's size and time) to drop.
    pub inodes: Vec<u64>,
}

fn key_of(path: &str, etag: Option<&str>) -> String {
    match etag {
        Some(e) => format!("{path}\0{e}"),
        None => path.to_owned(),
    }
}

/// `parent/name` as a WormFS path.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Whether `path` is `top` or below it.
fn within(path: &str, top: &str) -> bool {
    top == "/"
        || path == top
        || (path.starts_with(top) && path.as_bytes().get(top.len()) == Some(&b'/'))
}

/// The parent of a WormFS path (`/` for a top-level name and for `/`).
fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

impl Tree {
    /// A tree whose root is the WormFS directory `root` (`/` or `/Films`).
    pub fn new(root: &str, root_mtime_ms: u64) -> Self {
        let root = if root.len() > 1 {
            root.trim_end_matches('/').to_owned()
        } else {
            "/".to_owned()
        };
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                path: root.clone(),
                parent: ROOT,
                name: String::new(),
                kind: EntryKind::Dir,
                size: 0,
                mtime_ms: root_mtime_ms,
                etag: None,
            },
        );
        let mut keys = BTreeMap::new();
        keys.insert(root.clone(), ROOT);
        Tree {
            root,
            inner: Mutex::new(Inner {
                nodes,
                keys,
                next: ROOT + 1,
                generation: 0,
                listings: HashMap::new(),
                in_sync: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node of `ino`, if the kernel was told of it.
    pub fn node(&self, ino: u64) -> Option<Node> {
        self.lock().nodes.get(&ino).cloned()
    }

    /// How many inodes the mount has handed out.
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    /// The cached listing of the directory at `path`, while the change feed is followed.
    pub fn cached_listing(&self, path: &str) -> Option<Listing> {
        let inner = self.lock();
        if !inner.in_sync {
            return None;
        }
        inner.listings.get(path).cloned()
    }

    /// The generation to read before asking the node for a listing (see [`Tree::store_listing`]).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Records the entries the node listed for the directory `dir` (inode `dir_ino`), asked
    /// for at `generation`: each gets its inode and attributes, and the listing is cached while
    /// in sync. The flag says whether it is current: false when a change arrived while it was
    /// asked for (it may predate the change; it is not cached, and the caller asks again).
    pub fn store_listing(
        &self,
        dir_ino: u64,
        entries: Vec<DirEntry>,
        generation: u64,
    ) -> Option<(Listing, bool)> {
        let mut inner = self.lock();
        let dir_path = inner.nodes.get(&dir_ino)?.path.clone();
        let mut children = Vec::with_capacity(entries.len());
        for e in entries {
            let path = join(&dir_path, &e.name);
            let key = key_of(&path, e.etag.as_deref());
            let ino = match inner.keys.get(&key) {
                Some(&i) => i,
                None => {
                    let i = inner.next;
                    inner.next += 1;
                    inner.keys.insert(key, i);
                    i
                }
            };
            inner.nodes.insert(
                ino,
                Node {
                    path,
                    parent: dir_ino,
                    name: e.name.clone(),
                    kind: e.kind,
                    size: e.size,
                    mtime_ms: e.mtime_ms,
                    etag: e.etag,
                },
            );
            children.push(Child {
                name: e.name,
                ino,
                kind: e.kind,
            });
        }
        let listing = Arc::new(children);
        let current = inner.generation == generation;
        if inner.in_sync && current {
            inner.listings.insert(dir_path, listing.clone());
        }
        Some((listing, current))
    }

    /// Following the change feed (listings may be cached) or not (every listing asks the
    /// node, so an unreachable node is an error, never a stale or empty folder).
    pub fn set_in_sync(&self, in_sync: bool) {
        let mut inner = self.lock();
        inner.in_sync = in_sync;
        if !in_sync {
            inner.listings.clear();
            inner.generation += 1;
        }
    }

    /// Everything changed: drops the cached listings and names every entry the kernel may
    /// cache.
    pub fn reset(&self) -> Forget {
        let mut inner = self.lock();
        Self::reset_locked(&mut inner)
    }

    fn reset_locked(inner: &mut Inner) -> Forget {
        inner.listings.clear();
        inner.generation += 1;
        let mut f = Forget::default();
        for (&ino, n) in &inner.nodes {
            if ino != ROOT {
                f.entries.push((n.parent, n.name.clone()));
            }
            if n.kind == EntryKind::Dir {
                f.inodes.push(ino);
            }
        }
        f
    }

    /// The WormFS path `path` (a file or directory, with everything below it) changed: drops
    /// the listings of it, of its ancestors (up to the mount's root) and below it, forgets
    /// the inodes below it (a later lookup makes new ones), and names what the kernel must
    /// drop: the changed name in its parent, and the ancestors' attributes (never the
    /// ancestors' own names: that would drop every name the kernel cached below them). A
    /// change to the mount's root or above it is a reset; paths elsewhere change nothing.
    pub fn changed(&self, path: &str) -> Forget {
        let mut inner = self.lock();
        if within(&self.root, path) {
            // The root itself, or a folder above it, was replaced, moved or removed.
            let f = Self::reset_locked(&mut inner);
            inner.keys.retain(|_, ino| *ino == ROOT);
            return f;
        }
        if !within(path, &self.root) {
            return Forget::default();
        }
        inner.generation += 1;
        let mut f = Forget::default();
        let parent = parent_of(path).to_owned();
        if let Some(&pino) = inner.keys.get(&parent) {
            let name = path.rsplit('/').next().unwrap_or_default().to_owned();
            f.entries.push((pino, name));
        }
        // Every ancestor inside the root: its listing and its attributes (a new name in it).
        let mut p = parent;
        loop {
            inner.listings.remove(&p);
            if let Some(&ino) = inner.keys.get(&p) {
                f.inodes.push(ino);
            }
            if p == self.root || p == "/" {
                break;
            }
            p = parent_of(&p).to_owned();
        }
        // The path itself and below: listings dropped, inodes forgotten so the next lookup
        // makes fresh ones. Keys below `path` are one range of the sorted map.
        inner.listings.retain(|k, _| !within(k, path));
        let gone: Vec<String> = inner
            .keys
            .range::<str, _>((std::ops::Bound::Included(path), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(path))
            .filter(|(k, _)| within(k.split('\0').next().unwrap_or_default(), path))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(ino) = inner.keys.remove(&k) {
                f.inodes.push(ino);
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wormfs_parts::ids::FileId;

    fn file(name: &str, etag: &str) -> DirEntry {
        DirEntry {
            name: name.into(),
            kind: EntryKind::File,
            size: 3,
            mtime_ms: 1,
            file_id: Some(FileId::mint()),
            etag: Some(etag.into()),
            policy: None,
        }
    }

    fn dir(name: &str) -> DirEntry {
        DirEntry {
            name: name.into(),
            kind: EntryKind::Dir,
            size: 0,
            mtime_ms: 1,
            file_id: None,
            etag: None,
            policy: None,
        }
    }

    #[test]
    fn a_replaced_file_is_a_new_inode() {
        let t = Tree::new("/", 0);
        let a = t
            .store_listing(ROOT, vec![file("a", "e1")], t.generation())
            .unwrap()
            .0[0]
            .ino;
        let again = t
            .store_listing(ROOT, vec![file("a", "e1")], t.generation())
            .unwrap()
            .0[0]
            .ino;
        assert_eq!(a, again);
        let b = t
            .store_listing(ROOT, vec![file("a", "e2")], t.generation())
            .unwrap()
            .0[0]
            .ino;
        assert_ne!(a, b);
        assert_eq!(t.node(b).unwrap().path, "/a");
    }

    #[test]
    fn listings_are_cached_only_in_sync_and_dropped_on_change() {
        let t = Tree::new("/Films", 0);
        t.store_listing(ROOT, vec![dir("X")], t.generation());
        assert!(
            t.cached_listing("/Films").is_none(),
            "not in sync: nothing cached"
        );
        t.set_in_sync(true);
        let x = t
            .store_listing(ROOT, vec![dir("X")], t.generation())
            .unwrap()
            .0[0]
            .ino;
        t.store_listing(x, vec![file("m.mkv", "e")], t.generation());
        assert!(t.cached_listing("/Films/X").is_some());
        // A film arrives in /Films/X: the listings of X and the root go, their attributes are
        // dropped, and the new name in X; never X's own name (the kernel would drop every
        // name cached below X).
        let f = t.changed("/Films/X/n.mkv");
        assert!(t.cached_listing("/Films/X").is_none());
        assert!(t.cached_listing("/Films").is_none());
        assert_eq!(f.entries, vec![(x, "n.mkv".to_string())]);
        assert!(f.inodes.contains(&x) && f.inodes.contains(&ROOT));
        // Outside the root: nothing.
        t.store_listing(x, vec![file("m.mkv", "e")], t.generation());
        assert_eq!(t.changed("/Shows/a.mkv"), Forget::default());
        assert!(t.cached_listing("/Films/X").is_some());
        // The feed lost: nothing cached.
        t.set_in_sync(false);
        assert!(t.cached_listing("/Films/X").is_none());
    }

    #[test]
    fn a_listing_asked_for_before_a_change_is_not_cached() {
        let t = Tree::new("/", 0);
        t.set_in_sync(true);
        let before = t.generation();
        // The change arrives while the listing is on its way.
        t.changed("/new.mkv");
        let (_, current) = t.store_listing(ROOT, vec![dir("X")], before).unwrap();
        assert!(!current);
        assert!(t.cached_listing("/").is_none());
        let (_, current) = t
            .store_listing(ROOT, vec![dir("X")], t.generation())
            .unwrap();
        assert!(current);
        assert!(t.cached_listing("/").is_some());
    }

    #[test]
    fn the_root_replaced_or_moved_is_a_reset() {
        let t = Tree::new("/Media/Films", 0);
        t.set_in_sync(true);
        let x = t
            .store_listing(ROOT, vec![dir("X")], t.generation())
            .unwrap()
            .0[0]
            .ino;
        let f = t.changed("/Media");
        assert!(f.entries.contains(&(ROOT, "X".into())));
        assert!(t.cached_listing("/Media/Films").is_none());
        // X is a new inode once listed again.
        let x2 = t
            .store_listing(ROOT, vec![dir("X")], t.generation())
            .unwrap()
            .0[0]
            .ino;
        assert_ne!(x, x2);
        // A sibling of the root changes nothing.
        assert_eq!(t.changed("/Media/Shows/a"), Forget::default());
        assert_eq!(t.changed("/Media/Films2"), Forget::default());
    }

    #[test]
    fn a_removed_folder_forgets_what_was_below() {
        let t = Tree::new("/", 0);
        t.set_in_sync(true);
        let x = t
            .store_listing(ROOT, vec![dir("X")], t.generation())
            .unwrap()
            .0[0]
            .ino;
        let m = t
            .store_listing(x, vec![file("m", "e")], t.generation())
            .unwrap()
            .0[0]
            .ino;
        let f = t.changed("/X");
        assert!(f.inodes.contains(&x) && f.inodes.contains(&m));
        assert!(f.entries.contains(&(ROOT, "X".into())));
        // Listed again, X is a new inode.
        let x2 = t
            .store_listing(ROOT, vec![dir("X")], t.generation())
            .unwrap()
            .0[0]
            .ino;
        assert_ne!(x, x2);
    }
}
