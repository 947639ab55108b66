//! Walking a drop folder: regular files only, never following a symbolic link out of it.

use std::path::{Path, PathBuf};

use crate::names;
use crate::tracker::Signature;

/// One regular file found by a scan.
#[derive(Debug, Clone)]
pub struct Found {
    /// Absolute path.
    pub path: PathBuf,
    /// Its state.
    pub sig: Signature,
}

/// All regular files under `root`, skipping symbolic links, litter folders and `exclude`
/// (a done folder inside the drop folder). Unreadable folders are logged and skipped.
pub fn scan(root: &Path, exclude: &[PathBuf]) -> Vec<Found> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "cannot list drop folder: {e}");
                continue;
            }
        };
        for ent in rd.flatten() {
            let path = ent.path();
            if exclude.iter().any(|x| path.starts_with(x)) {
                continue;
            }
            // symlink_metadata: a link is reported as a link, never followed.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let litter = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(names::is_litter);
                if !litter {
                    stack.push(path);
                }
            } else if ft.is_file() {
                out.push(Found {
                    sig: Signature::of(&meta),
                    path,
                });
            } else if ft.is_symlink() {
                tracing::debug!(path = %path.display(), "symbolic link in a drop folder: not followed");
            }
        }
    }
    out
}

/// The state of one path if it is a regular file (not a link).
pub fn stat_file(path: &Path) -> Option<Signature> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type().is_file().then(|| Signature::of(&meta))
}
