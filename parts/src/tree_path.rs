//! Paths in the WormFS tree: validated, NFC-normalised, always absolute.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Longest name (one component), in bytes.
pub const NAME_MAX_BYTES: usize = 255;
/// Longest path, in bytes.
pub const PATH_MAX_BYTES: usize = 4096;

/// `name` with " (n)" before its extension, at most `max` bytes: the stem is shortened, on a
/// character boundary, to make room for the number; an extension that leaves no room for a
/// stem counts as part of the stem.
pub fn numbered_name(name: &str, n: u64, max: usize) -> String {
    let suffix = format!(" ({n})");
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 && suffix.len() + (name.len() - i) < max => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let mut cut = stem.len().min(max.saturating_sub(suffix.len() + ext.len()));
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}{ext}", &stem[..cut])
}

/// A validated path in the tree: `/` or `/a/b/c`, each component NFC-normalised.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreePath {
    components: Vec<String>,
}

/// Why a path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// `a//b`.
    #[error("path {0:?} has an empty component")]
    EmptyComponent(String),
    /// `.` or `..`.
    #[error("path {0:?} contains a \".\" or \"..\" component")]
    DotComponent(String),
    /// A NUL, a backslash or another control character.
    #[error("path {0:?} contains a NUL, backslash or control character")]
    BadCharacter(String),
    /// Too long.
    #[error("path {0:?} is too long")]
    TooLong(String),
    /// A name to add to a path holds a `/`.
    #[error("{0:?} is not a single name")]
    NotOneName(String),
}

impl TreePath {
    /// The root directory.
    pub fn root() -> Self {
        Self {
            components: Vec::new(),
        }
    }

    /// Parses and normalises a client path. A leading `/` is optional; one trailing `/` is allowed.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let s = raw.strip_prefix('/').unwrap_or(raw);
        let s = s.strip_suffix('/').unwrap_or(s);
        if raw.len() > PATH_MAX_BYTES {
            return Err(PathError::TooLong(raw.to_owned()));
        }
        if s.is_empty() {
            return Ok(Self::root());
        }
        let mut components = Vec::new();
        for c in s.split('/') {
            if c.is_empty() {
                return Err(PathError::EmptyComponent(raw.to_owned()));
            }
            if c == "." || c == ".." {
                return Err(PathError::DotComponent(raw.to_owned()));
            }
            if c.chars().any(|ch| ch == '\\' || ch.is_control()) {
                return Err(PathError::BadCharacter(raw.to_owned()));
            }
            let n: String = c.nfc().collect();
            if n.len() > NAME_MAX_BYTES {
                return Err(PathError::TooLong(raw.to_owned()));
            }
            components.push(n);
        }
        Ok(Self { components })
    }

    /// The components, root first.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The last component, if not root.
    pub fn name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    /// The parent directory (root's parent is root).
    pub fn parent(&self) -> TreePath {
        let mut c = self.components.clone();
        c.pop();
        Self { components: c }
    }

    /// This path with one more component (which must be a valid name).
    pub fn join(&self, name: &str) -> Result<TreePath, PathError> {
        // Checked as a path of its own so that it is exactly one valid component ("/" + name:
        // formatting the root and the name together would give "//name").
        let one = TreePath::parse(&format!("/{name}"))?;
        if one.components.len() != 1 {
            return Err(PathError::NotOneName(name.to_owned()));
        }
        let mut out = self.clone();
        out.components.extend(one.components);
        // The whole path's limits still hold.
        TreePath::parse(&out.to_string())
    }

    /// Whether `self` is `other` or inside it.
    pub fn starts_with(&self, other: &TreePath) -> bool {
        self.components.starts_with(&other.components)
    }
}

impl fmt::Display for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.components.is_empty() {
            return f.write_str("/");
        }
        for c in &self.components {
            write!(f, "/{c}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_joins_the_root_and_any_folder_and_must_be_one_component() {
        let root = TreePath::root();
        assert_eq!(root.join("a.txt").unwrap().to_string(), "/a.txt");
        let dir = TreePath::parse("/Films").unwrap();
        assert_eq!(
            dir.join("a (1).mkv").unwrap().to_string(),
            "/Films/a (1).mkv"
        );
        for bad in ["", "..", "a/b", "a\0b"] {
            assert!(dir.join(bad).is_err(), "{bad:?}");
            assert!(root.join(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_and_normalises() {
        assert_eq!(TreePath::parse("/").unwrap().to_string(), "/");
        assert_eq!(TreePath::parse("a/b/").unwrap().to_string(), "/a/b");
        let nfd = "/Cafe\u{301}.txt";
        assert_eq!(TreePath::parse(nfd).unwrap().to_string(), "/Caf\u{e9}.txt");
    }

    #[test]
    fn refuses_bad_paths() {
        for bad in [
            "/a/../b", "/a//b", "/a/./b", "/a\0b", "/a\\b", "..", "/x/\u{7}",
        ] {
            assert!(TreePath::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TreePath::parse(&"x".repeat(300)).is_err());
    }
}
