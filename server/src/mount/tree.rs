//! The mount's picture of the tree: inode numbers for the paths the kernel has seen, their
//! attributes, and listings cached while the change feed is followed.
//!
//! A directory's inode is its path; a file's is its path and entity tag, so a file replaced at
//! the same path is a new inode and the page cache kept for the old one (`FOPEN_KEEP_CACHE`) is
//! never served for the new bytes. Inodes are never reused; the kernel's `forget` is ignored (a
//! few hundred bytes per entry seen).

use std::collections::HashMap;
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
    keys: HashMap<String, u64>,
    next: u64,
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
        let mut keys = HashMap::new();
        keys.insert(root.clone(), ROOT);
        Tree {
            root,
            inner: Mutex::new(Inner {
                nodes,
                keys,
                next: ROOT + 1,
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

    /// Records the entries the node listed for the directory `dir` (inode `dir_ino`): each
    /// gets its inode and attributes, and the listing is cached while in sync.
    pub fn store_listing(&self, dir_ino: u64, entries: Vec<DirEntry>) -> Option<Listing> {
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
        if inner.in_sync {
            inner.listings.insert(dir_path, listing.clone());
        }
        Some(listing)
    }

    /// Following the change feed (listings may be cached) or not (every listing asks the
    /// node, so an unreachable node is an error, never a stale or empty folder).
    pub fn set_in_sync(&self, in_sync: bool) {
        let mut inner = self.lock();
        inner.in_sync = in_sync;
        if !in_sync {
            inner.listings.clear();
        }
    }

    /// Everything changed: drops the cached listings and names every entry the kernel may
    /// cache.
    pub fn reset(&self) -> Forget {
        let mut inner = self.lock();
        inner.listings.clear();
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
    /// drop. Paths outside the mount's root change nothing.
    pub fn changed(&self, path: &str) -> Forget {
        let mut f = Forget::default();
        let mut inner = self.lock();
        // Ancestors inside the root: their listings, and each one's entry in its parent (a
        // folder made on the way by `mkdir -p` is new there too).
        let mut p = path.to_owned();
        loop {
            let parent = parent_of(&p).to_owned();
            if within(&parent, &self.root) {
                inner.listings.remove(&parent);
                if let Some(&pino) = inner.keys.get(&parent) {
                    let name = p.rsplit('/').next().unwrap_or_default().to_owned();
                    if !name.is_empty() {
                        f.entries.push((pino, name));
                    }
                    f.inodes.push(pino);
                }
            }
            if parent == "/" || !within(&parent, &self.root) || parent == self.root {
                break;
            }
            p = parent;
        }
        if !within(path, &self.root) || path == self.root {
            return f;
        }
        // The path itself and below: listings dropped, names forgotten so the next lookup
        // makes fresh inodes.
        inner.listings.retain(|k, _| !within(k, path));
        let gone: Vec<String> = inner
            .keys
            .keys()
            .filter(|k| {
                let p = k.split('\0').next().unwrap_or_default();
                within(p, path)
            })
            .cloned()
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
        let a = t.store_listing(ROOT, vec![file("a", "e1")]).unwrap()[0].ino;
        let again = t.store_listing(ROOT, vec![file("a", "e1")]).unwrap()[0].ino;
        assert_eq!(a, again);
        let b = t.store_listing(ROOT, vec![file("a", "e2")]).unwrap()[0].ino;
        assert_ne!(a, b);
        assert_eq!(t.node(b).unwrap().path, "/a");
    }

    #[test]
    fn listings_are_cached_only_in_sync_and_dropped_on_change() {
        let t = Tree::new("/Films", 0);
        t.store_listing(ROOT, vec![dir("X")]);
        assert!(
            t.cached_listing("/Films").is_none(),
            "not in sync: nothing cached"
        );
        t.set_in_sync(true);
        let x = t.store_listing(ROOT, vec![dir("X")]).unwrap()[0].ino;
        t.store_listing(x, vec![file("m.mkv", "e")]);
        assert!(t.cached_listing("/Films/X").is_some());
        // A film arrives in /Films/X: X's listing goes, the root's entry for X and X's own
        // attributes are dropped, and the new name in X.
        let f = t.changed("/Films/X/n.mkv");
        assert!(t.cached_listing("/Films/X").is_none());
        assert!(t.cached_listing("/Films").is_none());
        assert!(f.entries.contains(&(x, "n.mkv".into())));
        assert!(f.entries.contains(&(ROOT, "X".into())));
        assert!(f.inodes.contains(&x));
        // Outside the root: nothing.
        t.store_listing(x, vec![file("m.mkv", "e")]);
        assert_eq!(t.changed("/Shows/a.mkv"), Forget::default());
        assert!(t.cached_listing("/Films/X").is_some());
        // The feed lost: nothing cached.
        t.set_in_sync(false);
        assert!(t.cached_listing("/Films/X").is_none());
    }

    #[test]
    fn a_removed_folder_forgets_what_was_below() {
        let t = Tree::new("/", 0);
        t.set_in_sync(true);
        let x = t.store_listing(ROOT, vec![dir("X")]).unwrap()[0].ino;
        let m = t.store_listing(x, vec![file("m", "e")]).unwrap()[0].ino;
        let f = t.changed("/X");
        assert!(f.inodes.contains(&x) && f.inodes.contains(&m));
        assert!(f.entries.contains(&(ROOT, "X".into())));
        // Listed again, X is a new inode.
        let x2 = t.store_listing(ROOT, vec![dir("X")]).unwrap()[0].ino;
        assert_ne!(x, x2);
    }
}
