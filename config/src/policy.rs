//! Small enumerated settings with a text form: storage policies, the name-conflict rule and the
//! log format. Each one parses with `FromStr`, prints with `Display`, and goes through serde as
//! its text form, so a bad value in a config file is reported by the TOML parser with its line.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Largest number of data parts in an erasure-coded policy.
pub const MAX_EC_DATA: u16 = 32;
/// Largest number of parity parts in an erasure-coded policy.
pub const MAX_EC_PARITY: u16 = 16;
/// Largest number of whole copies in a copies policy.
pub const MAX_COPIES: u16 = 16;

/// A storage policy: how a file's bytes are spread over disks.
///
/// Text forms: `auto`, `ec:K+M` (K data parts, M parity parts, 1 <= K <= 32, 1 <= M <= 16) and
/// `copies:N` (N whole copies, 1 <= N <= 16). Parsing ignores surrounding spaces and letter case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicySpec {
    /// Let the server pick from the number of disks and machines in the cluster.
    Auto,
    /// Reed-Solomon erasure coding with `k` data parts and `m` parity parts.
    Ec {
        /// Data parts.
        k: u16,
        /// Parity parts.
        m: u16,
    },
    /// `n` whole copies on distinct disks.
    Copies {
        /// Number of copies.
        n: u16,
    },
}

impl PolicySpec {
    /// Parses the text form; the same as [`str::parse`].
    pub fn parse_str(s: &str) -> Result<Self, PolicyParseError> {
        s.parse()
    }
}

impl fmt::Display for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySpec::Auto => f.write_str("auto"),
            PolicySpec::Ec { k, m } => write!(f, "ec:{k}+{m}"),
            PolicySpec::Copies { n } => write!(f, "copies:{n}"),
        }
    }
}

/// Why a policy text did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyParseError {
    input: String,
    reason: Option<String>,
}

impl PolicyParseError {
    fn shape(input: &str) -> Self {
        PolicyParseError {
            input: input.to_owned(),
            reason: None,
        }
    }

    fn range(input: &str, reason: String) -> Self {
        PolicyParseError {
            input: input.to_owned(),
            reason: Some(reason),
        }
    }

    /// The text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for PolicyParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            None => write!(
                f,
                "invalid policy {:?}: expected \"auto\", \"ec:K+M\" or \"copies:N\"",
                self.input
            ),
            Some(reason) => write!(f, "invalid policy {:?}: {reason}", self.input),
        }
    }
}

impl std::error::Error for PolicyParseError {}

/// Parses a run of ASCII digits (no sign, no spaces) as a `u16`.
fn digits(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromStr for PolicySpec {
    type Err = PolicyParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim().to_ascii_lowercase();
        if text == "auto" {
            return Ok(PolicySpec::Auto);
        }
        if let Some(rest) = text.strip_prefix("ec:") {
            let (k, m) = rest
                .split_once('+')
                .and_then(|(k, m)| Some((digits(k)?, digits(m)?)))
                .ok_or_else(|| PolicyParseError::shape(input))?;
            if !(1..=MAX_EC_DATA).contains(&k) {
                return Err(PolicyParseError::range(
                    input,
                    format!("K (data parts) must be between 1 and {MAX_EC_DATA}, got {k}"),
                ));
            }
            if !(1..=MAX_EC_PARITY).contains(&m) {
                return Err(PolicyParseError::range(
                    input,
                    format!("M (parity parts) must be between 1 and {MAX_EC_PARITY}, got {m}"),
                ));
            }
            return Ok(PolicySpec::Ec { k, m });
        }
        if let Some(rest) = text.strip_prefix("copies:") {
            let n = digits(rest).ok_or_else(|| PolicyParseError::shape(input))?;
            if !(1..=MAX_COPIES).contains(&n) {
                return Err(PolicyParseError::range(
                    input,
                    format!("N (copies) must be between 1 and {MAX_COPIES}, got {n}"),
                ));
            }
            return Ok(PolicySpec::Copies { n });
        }
        Err(PolicyParseError::shape(input))
    }
}

/// What happens when a file arrives under a name that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictRule {
    /// Keep both: the newcomer gets a name like `movie (2).mkv`.
    Rename,
    /// The newcomer replaces the old file (the old one is deleted once the new one commits).
    Replace,
    /// Keep the old file and drop the newcomer.
    Skip,
}

/// What happens to a drop-folder file once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AfterIngest {
    /// Delete the original (after checking it did not change).
    Delete,
    /// Move the original into the folder's `done_dir`, keeping its subfolders.
    Move,
    /// Leave it; it is recognised and not taken again unless it changes.
    Keep,
}

/// Who may use the WebDAV face without a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Anonymous {
    /// Nobody: every request needs a user and password (the default).
    #[default]
    Off,
    /// Anyone may read.
    ReadOnly,
    /// Anyone may read and write (a trusted LAN or a test bench only).
    ReadWrite,
}

/// What a WebDAV user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Read only: GET, HEAD, OPTIONS and PROPFIND.
    ReadOnly,
    /// Read and write.
    ReadWrite,
    /// Read and write, and administer the cluster (the admin page).
    Admin,
}

/// What the WebDAV face does with the metadata files Finder writes (`.DS_Store`, `._name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MacMetadata {
    /// Store them as small files, like any other (the default: Finder sees what it wrote).
    #[default]
    Store,
    /// Answer the upload as if stored and keep nothing.
    Discard,
}

/// The output format of the server's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why a one-word setting (conflict rule, log format) did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseChoiceError {
    what: &'static str,
    input: String,
    expected: &'static str,
}

impl fmt::Display for ParseChoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} {:?}: expected {}",
            self.what, self.input, self.expected
        )
    }
}

impl std::error::Error for ParseChoiceError {}

/// Implements `Display` and `FromStr` for a fieldless enum from a table of names.
macro_rules! choice {
    ($ty:ident, $what:literal, $expected:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($ty::$variant => $name),+ })
            }
        }

        impl FromStr for $ty {
            type Err = ParseChoiceError;

            fn from_str(input: &str) -> Result<Self, Self::Err> {
                match input.trim().to_ascii_lowercase().as_str() {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(ParseChoiceError {
                        what: $what,
                        input: input.to_owned(),
                        expected: $expected,
                    }),
                }
            }
        }
    };
}

choice!(ConflictRule, "conflict rule", r#""rename", "replace" or "skip""#, {
    Rename => "rename",
    Replace => "replace",
    Skip => "skip",
});

choice!(AfterIngest, "after-ingest action", r#""delete", "move" or "keep""#, {
    Delete => "delete",
    Move => "move",
    Keep => "keep",
});

choice!(Anonymous, "anonymous access", r#""off", "ro" or "rw""#, {
    Off => "off",
    ReadOnly => "ro",
    ReadWrite => "rw",
});

choice!(MacMetadata, "macOS metadata handling", r#""store" or "discard""#, {
    Store => "store",
    Discard => "discard",
});

choice!(Role, "role", r#""ro", "rw" or "admin""#, {
    ReadOnly => "ro",
    ReadWrite => "rw",
    Admin => "admin",
});

choice!(LogFormat, "log format", r#""text" or "json""#, {
    Text => "text",
    Json => "json",
});

/// The body an alert webhook receives (docs/alerts.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookFormat {
    /// WormFS's own JSON document.
    Json,
    /// An ntfy message: the text as the body, title, priority and tags as headers.
    Ntfy,
    /// A Gotify message: `{"title", "message", "priority"}`.
    Gotify,
}

choice!(WebhookFormat, "webhook format", r#""json", "ntfy" or "gotify""#, {
    Json => "json",
    Ntfy => "ntfy",
    Gotify => "gotify",
});

/// How much an alert matters, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertSeverity {
    /// Worth knowing.
    Info,
    /// Needs attention soon.
    Warning,
    /// Data is at risk now.
    Critical,
}

choice!(AlertSeverity, "severity", r#""info", "warning" or "critical""#, {
    Info => "info",
    Warning => "warning",
    Critical => "critical",
});

/// The kind of media server told about new files (`[[media_servers]]`, docs/media-servers.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaServerKind {
    /// Jellyfin: `POST /Library/Media/Updated`.
    Jellyfin,
    /// Plex Media Server: `GET /library/sections/{id}/refresh?path=...`.
    Plex,
}

choice!(MediaServerKind, "media server kind", r#""jellyfin" or "plex""#, {
    Jellyfin => "jellyfin",
    Plex => "plex",
});

/// Implements serde for a type through its text form (`Display` / `FromStr`).
macro_rules! serde_as_str {
    ($ty:ident, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct TextVisitor;

                impl Visitor<'_> for TextVisitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }

                deserializer.deserialize_str(TextVisitor)
            }
        }
    };
}

serde_as_str!(
    PolicySpec,
    r#"a policy string: "auto", "ec:K+M" or "copies:N""#
);
serde_as_str!(
    ConflictRule,
    r#"a conflict rule string: "rename", "replace" or "skip""#
);
serde_as_str!(LogFormat, r#"a log format string: "text" or "json""#);
serde_as_str!(
    WebhookFormat,
    r#"a webhook format: "json", "ntfy" or "gotify""#
);
serde_as_str!(
    AlertSeverity,
    r#"a severity: "info", "warning" or "critical""#
);
serde_as_str!(
    MediaServerKind,
    r#"a media server kind: "jellyfin" or "plex""#
);
serde_as_str!(Anonymous, r#"anonymous access: "off", "ro" or "rw""#);
serde_as_str!(Role, r#"a role: "ro", "rw" or "admin""#);
serde_as_str!(
    MacMetadata,
    r#"macOS metadata handling: "store" or "discard""#
);
serde_as_str!(
    AfterIngest,
    r#"an after-ingest action: "delete", "move" or "keep""#
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_text_round_trips() {
        for (text, want) in [
            ("auto", PolicySpec::Auto),
            (" AUTO ", PolicySpec::Auto),
            ("ec:4+2", PolicySpec::Ec { k: 4, m: 2 }),
            ("ec:32+16", PolicySpec::Ec { k: 32, m: 16 }),
            ("copies:3", PolicySpec::Copies { n: 3 }),
        ] {
            let got: PolicySpec = text.parse().expect(text);
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string().parse::<PolicySpec>(), Ok(want));
        }
    }

    #[test]
    fn bad_policies_are_refused_with_a_clear_message() {
        let err = "ec:4+x".parse::<PolicySpec>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid policy "ec:4+x": expected "auto", "ec:K+M" or "copies:N""#
        );
        for bad in [
            "",
            "ec:",
            "ec:4",
            "ec:+4+2",
            "ec:4++2",
            "ec:0+2",
            "ec:33+2",
            "ec:4+0",
            "ec:4+17",
            "copies:0",
            "copies:17",
            "copies:-1",
            "copies",
            "mirror",
        ] {
            assert!(bad.parse::<PolicySpec>().is_err(), "{bad:?} parsed");
        }
        let err = "ec:40+2".parse::<PolicySpec>().unwrap_err();
        assert!(err.to_string().contains("between 1 and 32"), "{err}");
    }

    #[test]
    fn choices_parse_and_print() {
        assert_eq!("Replace".parse::<ConflictRule>(), Ok(ConflictRule::Replace));
        assert_eq!(ConflictRule::Skip.to_string(), "skip");
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        let err = "yaml".parse::<LogFormat>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid log format "yaml": expected "text" or "json""#
        );
    }
}
