//! The error type of configuration loading. Every message names where the bad value came from
//! (file and line, environment variable, or command-line flag), the key, and what was expected.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The config file is not valid TOML, has an unknown key, or a value of the wrong type.
    /// `message` starts with the line and column, then the key, then what was expected.
    #[error("{} {message}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What is wrong, e.g. `line 3, column 20: storage.block_size_bytes: invalid type: ...`.
        message: String,
    },
    /// A value has the right type but is not allowed (out of range, duplicate, inconsistent).
    #[error("{}", InvalidDisplay { path, key, line, message })]
    Invalid {
        /// The config file, when the value came from it (or is a file-run default).
        path: Option<PathBuf>,
        /// The key, e.g. `storage.block_size_bytes`.
        key: String,
        /// The 1-based line of the key in the file, when it was written there.
        line: Option<usize>,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A `WORMFS_<SECTION>__<KEY>` environment variable names no key or holds a bad value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong; names the key when the variable named one.
        message: String,
    },
}

/// Formats [`ConfigError::Invalid`] as `FILE line N: KEY: MESSAGE`, leaving out what is unknown.
struct InvalidDisplay<'a> {
    path: &'a Option<PathBuf>,
    key: &'a String,
    line: &'a Option<usize>,
    message: &'a String,
}

impl fmt::Display for InvalidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path, self.line) {
            (Some(path), Some(line)) => write!(f, "{} line {line}: ", path.display())?,
            (Some(path), None) => write!(f, "{}: ", path.display())?,
            (None, _) => {}
        }
        write!(f, "{}: {}", self.key, self.message)
    }
}
