//! The control plane between nodes: the cluster secret, the private libp2p network, and the
//! messages nodes exchange on it.

pub mod net;
pub mod protocol;
pub mod secret;

pub use net::{Inbound, PeerError, PeerNet};
pub use protocol::{PeerRequest, PeerResponse};
pub use secret::ClusterSecret;
