//! The cluster secret: 32 random bytes in a file only its owner may read. It keys the private
//! peer network (libp2p pnet), so a machine without it cannot finish a handshake, and its
//! fingerprint (never the secret) goes into mDNS records so that a machine lacking it can say so.

use std::path::Path;

use anyhow::{bail, Context};
use libp2p::pnet::PreSharedKey;

/// A join token's prefix and format version.
const TOKEN_PREFIX: &str = "wormfs-join-1";

/// The secret shared by every machine of a cluster.
#[derive(Clone)]
pub struct ClusterSecret([u8; 32]);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret({})", self.fingerprint())
    }
}

impl ClusterSecret {
    /// A new random secret.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// Reads `path`, refusing a file that other users can read or that is not a secret.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("read the cluster secret {}", path.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "the cluster secret {} is readable by other users (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the cluster secret {}", path.display()))?;
        Self::parse_hex(text.trim()).with_context(|| {
            format!(
                "{} is not a cluster secret (expected 64 hex digits, as `wormfs init` writes)",
                path.display()
            )
        })
    }

    fn parse_hex(text: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(text).context("not hex")?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("not 32 bytes"))?;
        Ok(Self(arr))
    }

    /// Reads `path`, or makes a new secret there (mode 0600) when it does not exist. Returns
    /// the secret and whether it was made now.
    pub fn read_or_create(path: &Path) -> anyhow::Result<(Self, bool)> {
        if path.exists() {
            return Ok((Self::read(path)?, false));
        }
        let s = Self::random();
        s.write(path)?;
        Ok((s, true))
    }

    /// Writes the secret to `path` (mode 0600), durably; refuses to replace another secret.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                // The data folder by default: private like the rest of it (docs/operations.md).
                wormfs_parts::fsutil::create_private_dir_all(dir)
                    .with_context(|| format!("create {}", dir.display()))?;
            }
        }
        if path.exists() {
            let old = Self::read(path)?;
            if old.0 != self.0 {
                bail!(
                    "{} already holds another cluster's secret (fingerprint {}); move it away \
                     first if this machine is really leaving that cluster",
                    path.display(),
                    old.fingerprint()
                );
            }
            return Ok(());
        }
        wormfs_parts::fsutil::write_secret(path, &hex::encode(self.0))
    }

    /// The pnet key: derived from the secret, never the secret itself.
    pub fn psk(&self) -> PreSharedKey {
        PreSharedKey::new(blake3::derive_key("wormfs 2026 pnet key v1", &self.0))
    }

    /// A short public fingerprint (16 hex digits) that says which secret a machine holds.
    pub fn fingerprint(&self) -> String {
        let k = blake3::derive_key("wormfs 2026 secret fingerprint v1", &self.0);
        hex::encode(&k[..8])
    }

    /// What another machine needs to join: the cluster's name and this secret.
    pub fn join_token(&self, cluster_name: &str) -> String {
        format!("{TOKEN_PREFIX}:{cluster_name}:{}", hex::encode(self.0))
    }

    /// Parses a join token into the cluster name and secret.
    pub fn from_join_token(token: &str) -> anyhow::Result<(String, Self)> {
        let mut it = token.trim().splitn(3, ':');
        match (it.next(), it.next(), it.next()) {
            (Some(TOKEN_PREFIX), Some(name), Some(secret)) if !name.is_empty() => {
                Ok((name.to_owned(), Self::parse_hex(secret)?))
            }
            _ => bail!("not a join token (expected {TOKEN_PREFIX}:NAME:SECRET, as `wormfs join-token` prints)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_refuse_loose_files() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/cluster-secret");
        let (s, made) = ClusterSecret::read_or_create(&p).unwrap();
        assert!(made);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, made) = ClusterSecret::read_or_create(&p).unwrap();
        assert!(!made);
        assert_eq!(again.0, s.0);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ClusterSecret::read(&p).unwrap_err().to_string();
        assert!(e.contains("readable by other users"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A token carries the name and the secret; writing another secret over it is refused.
        let (name, back) = ClusterSecret::from_join_token(&s.join_token("home")).unwrap();
        assert_eq!((name.as_str(), back.0), ("home", s.0));
        let e = ClusterSecret::random().write(&p).unwrap_err().to_string();
        assert!(e.contains("another cluster"), "{e}");
        assert!(ClusterSecret::from_join_token("wormfs-join-1:home:zz").is_err());
        assert!(ClusterSecret::from_join_token("hello").is_err());
        std::fs::write(&p, "not a secret").unwrap();
        let e = format!("{:#}", ClusterSecret::read(&p).unwrap_err());
        assert!(e.contains("64 hex digits"), "{e}");
        assert_ne!(s.fingerprint(), ClusterSecret::random().fingerprint());
    }
}
