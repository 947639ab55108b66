//! A `[[media_servers]]` entry's `path_map`: a WormFS folder to the path the media server sees
//! for it. The longest mapped folder that holds a path wins (`/Films/Kids` before `/Films`
//! before `/`); a path under none is not the media server's business.

use wormfs_config::PathMapEntry;

/// The map of one media server, longest WormFS folder first.
#[derive(Clone, Debug)]
pub struct PathMap {
    entries: Vec<PathMapEntry>,
}

impl PathMap {
    /// From the config's entries (sorted here again, so the rule does not rest on the caller).
    pub fn new(mut entries: Vec<PathMapEntry>) -> Self {
        entries.sort_by(|a, b| {
            b.wormfs
                .len()
                .cmp(&a.wormfs.len())
                .then(a.wormfs.cmp(&b.wormfs))
        });
        PathMap { entries }
    }

    /// The WormFS folders mapped, longest first.
    pub fn folders(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.wormfs.as_str())
    }

    /// Where the media server sees the WormFS path `path` (absolute, no trailing `/`), or
    /// `None` when no mapped folder holds it.
    pub fn map(&self, path: &str) -> Option<String> {
        self.entries.iter().find_map(|e| {
            let rest = rest_under(path, &e.wormfs)?;
            Some(join_server_path(&e.server, rest))
        })
    }
}

/// What follows `folder` in `path` (without the separating `/`), if `path` is `folder` or
/// below it. `/Films2` is not below `/Films`.
fn rest_under<'a>(path: &'a str, folder: &str) -> Option<&'a str> {
    if folder == "/" {
        return path.strip_prefix('/');
    }
    match path.strip_prefix(folder)? {
        "" => Some(""),
        rest => rest.strip_prefix('/'),
    }
}

/// `rest` (WormFS components joined by `/`) appended to the server's `base`, with the server's
/// separator: `\` for a Windows path written with backslashes only (`D:\Media`), else `/`.
fn join_server_path(base: &str, rest: &str) -> String {
    if rest.is_empty() {
        return base.to_owned();
    }
    let windows = base.contains('\\') && !base.contains('/');
    let sep = if windows { '\\' } else { '/' };
    let rest = if windows {
        rest.replace('/', "\\")
    } else {
        rest.to_owned()
    };
    if base.ends_with(sep) {
        format!("{base}{rest}")
    } else {
        format!("{base}{sep}{rest}")
    }
}

/// Whether the server path `path` is `folder` or below it, for either separator
/// (`/media/films/A` is under `/media/films` and `/media/films/`; `/media/films2` is not).
pub fn server_path_under(path: &str, folder: &str) -> bool {
    let folder = folder.trim_end_matches(['/', '\\']);
    if folder.is_empty() {
        // The root of a POSIX server.
        return path.starts_with('/');
    }
    match path.strip_prefix(folder) {
        Some("") => true,
        Some(rest) => rest.starts_with(['/', '\\']),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> PathMap {
        PathMap::new(
            pairs
                .iter()
                .map(|(w, s)| PathMapEntry {
                    wormfs: (*w).to_owned(),
                    server: (*s).to_owned(),
                })
                .collect(),
        )
    }

    #[test]
    fn the_longest_folder_wins_and_paths_outside_every_folder_are_not_mapped() {
        let m = map(&[
            ("/Films", "/media/films"),
            ("/Films/Kids", "/kids"),
            ("/TV", "/media/tv/"),
        ]);
        let cases = [
            ("/Films", Some("/media/films")),
            ("/Films/A (2024)", Some("/media/films/A (2024)")),
            ("/Films/Kids", Some("/kids")),
            ("/Films/Kids/B", Some("/kids/B")),
            ("/Films/Kidsville/C", Some("/media/films/Kidsville/C")),
            ("/TV/Show/Season 1", Some("/media/tv/Show/Season 1")),
            ("/Films2/A", None),
            ("/Music/A", None),
            ("/", None),
        ];
        for (path, want) in cases {
            assert_eq!(m.map(path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn the_root_maps_everything_and_windows_paths_keep_their_separator() {
        let m = map(&[("/", "/mnt/wormfs"), ("/Films", "D:\\Media\\Films")]);
        assert_eq!(m.map("/").as_deref(), Some("/mnt/wormfs"));
        assert_eq!(m.map("/Music/X").as_deref(), Some("/mnt/wormfs/Music/X"));
        assert_eq!(
            m.map("/Films/A/B").as_deref(),
            Some("D:\\Media\\Films\\A\\B")
        );
        let folders: Vec<&str> = m.folders().collect();
        assert_eq!(folders, vec!["/Films", "/"]);
    }

    #[test]
    fn server_paths_are_under_a_location_only_at_a_separator() {
        assert!(server_path_under("/media/films/A", "/media/films"));
        assert!(server_path_under("/media/films/A", "/media/films/"));
        assert!(server_path_under("/media/films", "/media/films"));
        assert!(!server_path_under("/media/films2/A", "/media/films"));
        assert!(server_path_under("D:\\Media\\A", "D:\\Media"));
        assert!(server_path_under("/anything", "/"));
    }
}
