//! The node's data-plane certificate: a self-signed P-256 certificate made at first start,
//! whose SHA-256 fingerprint the node registers in the replicated membership. Peers accept
//! exactly the fingerprints registered there; names and dates in the certificate play no part.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

use wormfs_parts::ids::NodeId;

/// The certificate file in the data folder (PEM).
pub const CERT_FILE: &str = "data-cert.pem";
/// The private key file in the data folder (PEM, mode 0600).
pub const KEY_FILE: &str = "data-key.pem";

/// The SHA-256 of a certificate's DER bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `der`.
    pub fn of(der: &[u8]) -> Self {
        Self(sha2::Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&s).map_err(|e| format!("fingerprint {s:?}: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("fingerprint {s:?}: not 32 bytes"))?;
        Ok(Self(arr))
    }
}

/// The node's certificate and key.
pub struct NodeCert {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
}

impl Clone for NodeCert {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint,
        }
    }
}

impl NodeCert {
    /// The private key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// Reads the certificate and key from `dir`, making them first if neither exists. A key
    /// that other users can read is refused.
    pub fn load_or_create(dir: &Path, node_id: NodeId) -> anyhow::Result<Self> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (false, false) => Self::create(&cert_path, &key_path, node_id),
            (true, true) => Self::load(&cert_path, &key_path),
            (c, _) => {
                bail!(
                "{} exists but {} does not; restore it, or remove both to make a new certificate \
                 (then update this node's registration by restarting it)",
                if c { cert_path.display() } else { key_path.display() },
                if c { key_path.display() } else { cert_path.display() },
            )
            }
        }
    }

    fn create(cert_path: &Path, key_path: &Path, node_id: NodeId) -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("make the data-plane key")?;
        let params = rcgen::CertificateParams::new(vec![format!("wormfs-node-{node_id:016x}")])
            .context("certificate parameters")?;
        let cert = params
            .self_signed(&key)
            .context("sign the data-plane certificate")?;
        wormfs_parts::fsutil::write_secret(key_path, key.serialize_pem().trim_end())?;
        wormfs_parts::fsutil::write_durably(cert_path, cert.pem().as_bytes())?;
        tracing::info!(file = %cert_path.display(), "made the data-plane certificate");
        Self::load(cert_path, key_path)
    }

    fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key_path)
            .with_context(|| format!("read {}", key_path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by other users (mode {:o}); run chmod 600 on it",
                key_path.display(),
                mode & 0o777
            );
        }
        let cert = CertificateDer::from_pem_file(cert_path)
            .with_context(|| format!("read certificate {}", cert_path.display()))?;
        let key = PrivateKeyDer::from_pem_file(key_path)
            .with_context(|| format!("read private key {}", key_path.display()))?;
        let fingerprint = Fingerprint::of(&cert);
        Ok(Self {
            cert,
            key,
            fingerprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_read_back_and_a_loose_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeCert::load_or_create(dir.path(), 7).unwrap();
        let b = NodeCert::load_or_create(dir.path(), 7).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint, Fingerprint::of(&b.cert));
        let text = a.fingerprint.to_string();
        assert_eq!(text.parse::<Fingerprint>().unwrap(), a.fingerprint);
        use std::os::unix::fs::PermissionsExt;
        let key = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = NodeCert::load_or_create(dir.path(), 7).err().unwrap();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::remove_file(&key).unwrap();
        let e = NodeCert::load_or_create(dir.path(), 7).err().unwrap();
        assert!(e.to_string().contains("does not"), "{e:#}");
    }
}
