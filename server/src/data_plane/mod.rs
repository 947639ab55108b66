//! The part data plane: part bytes move between nodes over HTTP/1.1 on mutual TLS 1.3, never
//! over the libp2p control plane. Each node has a self-signed certificate whose fingerprint
//! it registers in the replicated membership; a server accepts only members' certificates and
//! a client only the certificate registered for the node it dials.
//!
//! - [`cert`]: the node's certificate and key, and fingerprints;
//! - [`tls`]: the pinned verifiers and the rustls configurations;
//! - [`directory`]: members' data addresses and certificates, and which node holds each disk;
//! - [`wire`]: the requests and their bodies;
//! - [`server`]: the data server;
//! - [`client`]: requests to other nodes, with timeouts and retries;
//! - [`remote_writer`]: a part writer for a disk on another node;
//! - [`remote_reader`]: a part reader for a part on another node.

pub mod cert;
pub mod client;
pub mod directory;
pub mod remote_reader;
pub mod remote_writer;
pub mod server;
pub mod tls;
pub mod wire;

pub use cert::{Fingerprint, NodeCert};
pub use client::{DataClient, DataError, RemotePart};
pub use directory::Directory;
pub use remote_reader::RemotePartReader;
pub use remote_writer::RemotePartWriter;
