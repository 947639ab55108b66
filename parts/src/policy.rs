//! Storage policies: `ec:K+M` and `copies:N`, defaults by disk count, and the small-file rule.

use std::fmt;
use std::str::FromStr;

use wormfs_config::PolicySpec;

/// A resolved policy (never "auto").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Erasure coding with `k` data and `m` parity parts.
    Ec {
        /// Data parts.
        k: u16,
        /// Parity parts.
        m: u16,
    },
    /// `n` identical full copies.
    Copies {
        /// Number of copies.
        n: u16,
    },
}

/// A policy that cannot be used with the disks there are.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("policy {policy} needs {needed} disks but only {available} can take new parts")]
pub struct PolicyTooWide {
    /// The policy asked for.
    pub policy: Policy,
    /// Disks it needs.
    pub needed: usize,
    /// Disks available.
    pub available: usize,
}

impl Policy {
    /// Parts per segment.
    pub fn width(&self) -> usize {
        match *self {
            Policy::Ec { k, m } => usize::from(k + m),
            Policy::Copies { n } => usize::from(n),
        }
    }

    /// Parts that may be lost while the data stays readable.
    pub fn redundancy(&self) -> usize {
        match *self {
            Policy::Ec { m, .. } => usize::from(m),
            Policy::Copies { n } => usize::from(n) - 1,
        }
    }

    /// The default policy for a number of disks (the `auto` table of docs/configuration.md).
    pub fn default_for_disks(disks: usize) -> Policy {
        match disks {
            0 | 1 => Policy::Copies { n: 1 },
            2 => Policy::Copies { n: 2 },
            3 => Policy::Ec { k: 2, m: 1 },
            4 => Policy::Ec { k: 2, m: 2 },
            5 => Policy::Ec { k: 3, m: 2 },
            _ => Policy::Ec { k: 4, m: 2 },
        }
    }

    /// The default policy for files below the small-file threshold.
    pub fn default_small_for_disks(disks: usize) -> Policy {
        Policy::Copies {
            n: disks.clamp(1, 3) as u16,
        }
    }

    /// Resolves a configured spec: `auto` becomes the default for `disks`.
    pub fn resolve(spec: PolicySpec, disks: usize, small: bool) -> Policy {
        match spec {
            PolicySpec::Auto if small => Self::default_small_for_disks(disks),
            PolicySpec::Auto => Self::default_for_disks(disks),
            PolicySpec::Ec { k, m } => Policy::Ec { k, m },
            PolicySpec::Copies { n } => Policy::Copies { n },
        }
    }

    /// Refuses a policy that needs more disks than `available`.
    pub fn check_fits(self, available: usize) -> Result<(), PolicyTooWide> {
        if self.width() > available {
            return Err(PolicyTooWide {
                policy: self,
                needed: self.width(),
                available,
            });
        }
        Ok(())
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Ec { k, m } => write!(f, "ec:{k}+{m}"),
            Policy::Copies { n } => write!(f, "copies:{n}"),
        }
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<PolicySpec>().map_err(|e| e.to_string())? {
            PolicySpec::Auto => Err(format!("policy {s:?} is not a concrete policy")),
            PolicySpec::Ec { k, m } => Ok(Policy::Ec { k, m }),
            PolicySpec::Copies { n } => Ok(Policy::Copies { n }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_by_disk_count() {
        let want = [
            "copies:1", "copies:2", "ec:2+1", "ec:2+2", "ec:3+2", "ec:4+2", "ec:4+2",
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(Policy::default_for_disks(i + 1).to_string(), *w);
        }
        assert_eq!(Policy::default_small_for_disks(6), Policy::Copies { n: 3 });
        assert_eq!(Policy::default_small_for_disks(2), Policy::Copies { n: 2 });
    }

    #[test]
    fn too_wide_is_refused() {
        let p: Policy = "ec:8+3".parse().unwrap();
        let e = p.check_fits(6).unwrap_err();
        assert_eq!(
            e.to_string(),
            "policy ec:8+3 needs 11 disks but only 6 can take new parts"
        );
        assert!("auto".parse::<Policy>().is_err());
    }
}
