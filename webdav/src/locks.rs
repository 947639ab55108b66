//! dav-server's lock system over the [`Backend`], which keeps the locks in the replicated
//! metadata and owns the rules deciding who may lock or change what (the state machine grants
//! locks by the same rules, so the face never keeps a copy that could drift).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use futures::FutureExt;
use xmltree::{Element, Namespace};

use crate::backend::{Backend, LockCheck, LockInfo};
use crate::davfs::tree_path_of;

/// The longest lock granted: a client asking for more (or for "Infinite") gets this and must
/// refresh, so a crashed client cannot block a file for ever.
pub const MAX_LOCK_SECS: u64 = 3600;

/// Whether `anc` is `path` or one of its ancestors (both in tree form): a path rule for the
/// tree operations' overlap checks, not a lock rule (those are the backend's).
pub fn is_ancestor_or_self(anc: &str, path: &str) -> bool {
    anc == "/"
        || path == anc
        || (path.starts_with(anc) && path.as_bytes().get(anc.len()) == Some(&b'/'))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn granted_secs(timeout: Option<Duration>) -> u64 {
    timeout.map_or(MAX_LOCK_SECS, |d| d.as_secs().clamp(1, MAX_LOCK_SECS))
}

fn to_dav(l: &LockInfo) -> DavLock {
    let path = DavPath::new(&l.href)
        .or_else(|_| DavPath::new("/"))
        .expect("/ is a valid path");
    DavLock {
        token: l.token.clone(),
        path: Box::new(path),
        principal: l.principal.clone(),
        owner: l
            .owner_xml
            .as_deref()
            .and_then(|x| Element::parse(x).ok())
            .map(Box::new),
        timeout_at: Some(UNIX_EPOCH + Duration::from_millis(l.expires_ms)),
        timeout: Some(Duration::from_secs(l.timeout_secs)),
        shared: l.shared,
        deep: l.deep,
    }
}

/// dav-server's lock system over the backend's replicated locks.
#[derive(Clone)]
pub struct WormLs {
    backend: Arc<dyn Backend>,
    /// For a read-only request (PROPFIND): the locks read once and reused for every entry.
    snapshot: Option<Arc<tokio::sync::OnceCell<Vec<LockInfo>>>>,
    /// For a DELETE, COPY or MOVE: the locks of what it removes are dropped by its one
    /// committed change, so dav-server's separate deletions (one of them made before the
    /// change, which could still fail) are skipped.
    locks_dropped_by_change: bool,
}

impl std::fmt::Debug for WormLs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WormLs")
    }
}

impl WormLs {
    /// A lock system over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Box<Self> {
        Box::new(Self {
            backend,
            snapshot: None,
            locks_dropped_by_change: false,
        })
    }

    /// A lock system for one DELETE, COPY or MOVE (see `locks_dropped_by_change`).
    pub fn for_tree_op(backend: Arc<dyn Backend>) -> Box<Self> {
        Box::new(Self {
            backend,
            snapshot: None,
            locks_dropped_by_change: true,
        })
    }

    /// A lock system for one read-only request: the locks are read once, at the first need,
    /// and that view serves every entry of the answer (a PROPFIND of 10,000 entries would
    /// otherwise read them 10,000 times).
    pub fn for_one_read(backend: Arc<dyn Backend>) -> Box<Self> {
        Box::new(Self {
            backend,
            snapshot: Some(Arc::default()),
            locks_dropped_by_change: false,
        })
    }

    async fn read_locks(&self) -> Result<Vec<LockInfo>, crate::BackendError> {
        match &self.snapshot {
            None => self.backend.locks().await,
            Some(cell) => cell.get_or_try_init(|| self.backend.locks()).await.cloned(),
        }
    }

    async fn live_locks(&self) -> Vec<LockInfo> {
        match self.read_locks().await {
            Ok(l) => l,
            Err(e) => {
                // Fail closed: an unknown lock state must not let a write through.
                tracing::warn!("webdav: cannot read locks: {e}");
                vec![LockInfo {
                    token: String::new(),
                    path: "/".into(),
                    href: "/".into(),
                    principal: None,
                    owner_xml: None,
                    expires_ms: u64::MAX,
                    timeout_secs: 0,
                    shared: false,
                    deep: true,
                }]
            }
        }
    }
}

fn collect_namespaces(e: &Element, ns: &mut Namespace) {
    match (&e.prefix, &e.namespace) {
        (Some(p), Some(n)) => ns.put(p.as_str(), n.as_str()),
        (None, Some(n)) => ns.put("", n.as_str()),
        _ => true,
    };
    for c in e.children.iter().filter_map(xmltree::XMLNode::as_element) {
        collect_namespaces(c, ns);
    }
}

/// The client's `owner` element as standalone XML (its namespaces declared on it).
fn owner_to_xml(e: &Element) -> Option<Vec<u8>> {
    let mut e = e.clone();
    let mut ns = e.namespaces.clone().unwrap_or_else(Namespace::empty);
    collect_namespaces(&e, &mut ns);
    e.namespaces = Some(ns);
    let mut buf = Vec::new();
    match e.write(&mut buf) {
        Ok(()) => Some(buf),
        Err(err) => {
            tracing::warn!("webdav lock owner not stored: {err}");
            None
        }
    }
}

fn placeholder(path: &DavPath) -> DavLock {
    DavLock {
        token: String::new(),
        path: Box::new(path.clone()),
        principal: None,
        owner: None,
        timeout_at: None,
        timeout: None,
        shared: false,
        deep: false,
    }
}

impl DavLockSystem for WormLs {
    fn lock(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let path = path.clone();
        let principal = principal.map(str::to_owned);
        let owner_xml = owner.and_then(owner_to_xml);
        async move {
            let Ok(tree) = tree_path_of(&path) else {
                return Err(placeholder(&path));
            };
            let secs = granted_secs(timeout);
            let info = LockInfo {
                token: format!("urn:uuid:{}", uuid::Uuid::new_v4()),
                path: tree,
                href: path.as_url_string(),
                principal,
                owner_xml,
                expires_ms: now_ms() + secs * 1000,
                timeout_secs: secs,
                shared,
                deep,
            };
            match self.backend.lock(info).await {
                Ok(Ok(l)) => Ok(to_dav(&l)),
                Ok(Err(conflict)) => Err(to_dav(&conflict)),
                Err(e) => {
                    tracing::warn!("webdav lock: {e}");
                    Err(placeholder(&path))
                }
            }
        }
        .boxed()
    }

    fn unlock(&'_ self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        let token = token.to_owned();
        async move {
            let tree = tree_path_of(&path).map_err(|_| ())?;
            // The token must cover the request URL.
            let locks = self.live_locks().await;
            if !self
                .backend
                .covering_locks(&locks, &tree, now_ms())
                .iter()
                .any(|l| l.token == token)
            {
                return Err(());
            }
            match self.backend.unlock(&token).await {
                Ok(true) => Ok(()),
                _ => Err(()),
            }
        }
        .boxed()
    }

    fn refresh(
        &'_ self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> LsFuture<'_, Result<DavLock, ()>> {
        let path = path.clone();
        let token = token.to_owned();
        async move {
            let tree = tree_path_of(&path).map_err(|_| ())?;
            let locks = self.live_locks().await;
            if !self
                .backend
                .covering_locks(&locks, &tree, now_ms())
                .iter()
                .any(|l| l.token == token)
            {
                return Err(());
            }
            let secs = granted_secs(timeout);
            match self
                .backend
                .refresh_lock(&token, now_ms() + secs * 1000, secs)
                .await
            {
                Ok(Some(l)) => Ok(to_dav(&l)),
                _ => Err(()),
            }
        }
        .boxed()
    }

    fn check(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let path = path.clone();
        let principal = principal.map(str::to_owned);
        let tokens = submitted_tokens.to_vec();
        async move {
            let Ok(tree) = tree_path_of(&path) else {
                return Err(placeholder(&path));
            };
            let locks = self.live_locks().await;
            let check = LockCheck {
                path: &tree,
                principal: principal.as_deref(),
                ignore_principal,
                deep,
                tokens: &tokens,
                shared_ok: false,
                now_ms: now_ms(),
            };
            match self.backend.lock_conflict(&locks, &check) {
                Some(l) => Err(to_dav(&l)),
                None => Ok(()),
            }
        }
        .boxed()
    }

    fn discover(&'_ self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let path = path.clone();
        async move {
            let Ok(tree) = tree_path_of(&path) else {
                return Vec::new();
            };
            match self.read_locks().await {
                Ok(locks) => self
                    .backend
                    .covering_locks(&locks, &tree, now_ms())
                    .iter()
                    .map(to_dav)
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
        .boxed()
    }

    fn delete(&'_ self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        async move {
            if self.locks_dropped_by_change {
                return Ok(());
            }
            let tree = tree_path_of(&path).map_err(|_| ())?;
            self.backend.delete_locks(&tree).await.map_err(|e| {
                tracing::warn!("webdav: dropping locks under {tree}: {e}");
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_survive_a_round_trip() {
        let doc = br#"<D:lockinfo xmlns:D="DAV:"><D:owner><D:href>litmus test suite</D:href></D:owner></D:lockinfo>"#;
        let root = Element::parse(&doc[..]).unwrap();
        let owner = root.get_child(("owner", "DAV:")).unwrap();
        let xml = owner_to_xml(owner).unwrap();
        let back = Element::parse(&xml[..]).unwrap();
        assert_eq!(back.name, "owner");
        let href = back.get_child(("href", "DAV:")).unwrap();
        assert_eq!(href.get_text().unwrap(), "litmus test suite");
    }

    #[test]
    fn ancestors_are_whole_components() {
        assert!(is_ancestor_or_self("/", "/a"));
        assert!(is_ancestor_or_self("/a", "/a"));
        assert!(is_ancestor_or_self("/a", "/a/b"));
        assert!(!is_ancestor_or_self("/a", "/ab"));
        assert!(!is_ancestor_or_self("/a/b", "/a"));
    }
}
