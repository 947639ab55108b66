//! Which names in a drop folder are not (yet) files to take.
//!
//! Download clients and copy tools write under a temporary name and rename the file when it is
//! complete; such names are never taken. Operating-system litter (Finder's `.DS_Store`,
//! Windows' `Thumbs.db` and `desktop.ini`, Synology's `@eaDir`) is never taken either.

/// Suffixes (compared case-insensitively) of names that are still being written.
const TEMP_SUFFIXES: &[&str] = &[
    ".part",       // Firefox, wget, many download clients
    ".partial",    // Safari, Transmission (incomplete-dir off)
    ".!qb",        // qBittorrent
    ".!ut",        // uTorrent
    ".crdownload", // Chrome, Edge
    ".download",   // Safari bundles
    ".opdownload", // Opera
    ".tmp",        // many tools, Windows copies
    ".temp",       // idem
    ".filepart",   // WinSCP
    ".aria2",      // aria2 control file
    ".unfinished", // some BitTorrent clients
];

/// Names that are litter, never content.
const LITTER: &[&str] = &[
    "@eaDir",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    ".Spotlight-V100",
    ".Trashes",
    ".fseventsd",
];

/// Whether `name` (one path component) is operating-system litter, never taken.
pub fn is_litter(name: &str) -> bool {
    LITTER.iter().any(|l| l.eq_ignore_ascii_case(name))
}

/// Whether `name` is a temporary name a complete file never has.
pub fn is_temporary(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    if TEMP_SUFFIXES
        .iter()
        .any(|s| lower.ends_with(s) && lower.len() > s.len())
    {
        return true;
    }
    if name.ends_with('~') || name.starts_with("~$") || name.starts_with(".~lock.") {
        return true;
    }
    if lower.starts_with(".syncthing.") && lower.ends_with(".tmp") {
        return true;
    }
    is_rsync_temp(name)
}

/// rsync writes `.NAME.XXXXXX` (six random letters or digits) and renames it to `NAME`. A suffix
/// of six lower-case letters (`.notes.backup`) is taken for a real name.
fn is_rsync_temp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((stem, suffix)) = rest.rsplit_once('.') else {
        return false;
    };
    !stem.is_empty()
        && suffix.len() == 6
        && suffix.chars().all(|c| c.is_ascii_alphanumeric())
        && suffix
            .chars()
            .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

/// For an AppleDouble companion `._NAME`, the name of its twin.
pub fn apple_double_twin(name: &str) -> Option<&str> {
    name.strip_prefix("._").filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names() {
        for n in [
            "film.mkv.part",
            "film.mkv.!qB",
            "film.mkv.crdownload",
            "a.TMP",
            "notes.txt~",
            ".film.mkv.a1B2c3",
            "~$report.docx",
            ".~lock.report.odt#",
            ".syncthing.film.mkv.tmp",
            "x.filepart",
        ] {
            assert!(is_temporary(n), "{n} should be temporary");
        }
        for n in [
            "film.mkv",
            "part",
            ".part",
            "My Film (2001).mkv",
            ".hidden",
            ".film.mkv.a1B2c",
            ".notes.backup",
            "._film.mkv",
            "photo.JPG",
            "partition.img",
        ] {
            assert!(!is_temporary(n), "{n} should be taken");
        }
    }

    #[test]
    fn litter_and_twins() {
        assert!(is_litter(".DS_Store"));
        assert!(is_litter("thumbs.db"));
        assert!(!is_litter("film.mkv"));
        assert_eq!(apple_double_twin("._film.mkv"), Some("film.mkv"));
        assert_eq!(apple_double_twin("._"), None);
        assert_eq!(apple_double_twin("film.mkv"), None);
    }
}
