//! Mutual TLS 1.3 for the data plane with pinned certificates: a server accepts a client whose
//! certificate fingerprint is registered in the membership, a client accepts exactly the
//! fingerprint registered for the node it dials. Chains, names and dates are not consulted:
//! the membership is the authority.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    self, CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme,
};

use super::cert::{Fingerprint, NodeCert};
use wormfs_parts::ids::NodeId;

/// The certificates a data server accepts, by fingerprint, with the node each belongs to.
pub type Allowed = Arc<RwLock<HashMap<Fingerprint, NodeId>>>;

/// Which AEAD the data plane prefers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherPreference {
    /// AES-GCM where the CPU has AES instructions, else ChaCha20-Poly1305.
    Auto,
    /// ChaCha20-Poly1305 first (to measure what a CPU without AES instructions gets).
    ChaCha20,
}

/// Whether this CPU has AES and carry-less multiply instructions.
pub fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The crypto provider: ring, TLS 1.3 suites ordered for this CPU. AES-128-GCM is first where
/// the CPU has AES instructions (faster than AES-256 here, see docs/performance.md);
/// ChaCha20-Poly1305 first where it has not.
pub fn provider(pref: CipherPreference) -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = if pref == CipherPreference::Auto && cpu_has_aes() {
        vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ]
    } else {
        vec![
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
        ]
    };
    Arc::new(p)
}

fn refused() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Server side: accepts a client certificate registered in the membership.
#[derive(Debug)]
struct PinnedClients {
    allowed: Allowed,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fp = Fingerprint::of(end_entity);
        let known = self
            .allowed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&fp);
        if known {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!(fingerprint = %fp, "data plane: refused a certificate not in the membership");
            Err(refused())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Client side: accepts exactly the certificate pinned for the node dialled.
#[derive(Debug)]
struct PinnedServer {
    expect: Fingerprint,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = Fingerprint::of(end_entity);
        if fp == self.expect {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::warn!(expected = %self.expect, got = %fp, "data plane: a peer presented a certificate other than its registered one");
            Err(refused())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The server configuration: TLS 1.3 only, a client certificate required and checked
/// against `allowed`.
pub fn server_config(
    cert: &NodeCert,
    allowed: Allowed,
    pref: CipherPreference,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let p = provider(pref);
    let verifier = PinnedClients {
        allowed,
        algs: p.signature_verification_algorithms,
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![cert.cert.clone()], cert.key())
        .context("data-plane certificate and key")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The client configuration for dialling the node whose certificate is `expect`.
pub fn client_config(
    cert: &NodeCert,
    expect: Fingerprint,
    pref: CipherPreference,
) -> anyhow::Result<rustls::ClientConfig> {
    let p = provider(pref);
    let verifier = PinnedServer {
        expect,
        algs: p.signature_verification_algorithms,
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![cert.cert.clone()], cert.key())
        .context("data-plane certificate and key")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
