//! Finding and being found on the LAN over mDNS (multicast DNS, RFC 6762, with DNS-SD,
//! RFC 6763): a node advertises its faces (`_webdav._tcp` for file managers) under a host name
//! of its own, `wormfs-<node id>.local.` (Avahi on TrueNAS, Unraid and Debian already owns the
//! machine's `<hostname>.local`), and browses for services.
//!
//! mDNS is off in the embedded default; a run with a config file turns it on unless told not to.

// No unsafe code here: the workspace lint is `deny` only so that one syscall in
// wormfs-parts (`fsutil::writeback_error`) can be allowed.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use serde::Serialize;

/// DNS-SD type of a plain-HTTP WebDAV face.
pub const WEBDAV: &str = "_webdav._tcp.local.";
/// DNS-SD type of a WebDAV face over HTTPS.
pub const WEBDAVS: &str = "_webdavs._tcp.local.";
/// WormFS nodes' private control plane, for machines of a cluster to find each other. The TXT
/// record carries `v` (record version), `cluster` (name), `cid` (cluster id, once known),
/// `node` (node id), `peer` (libp2p peer id) and `fp` (the secret's fingerprint, never the
/// secret).
pub const WORMFS: &str = "_wormfs._tcp.local.";

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The mDNS daemon could not start or answer.
    #[error("mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
    /// UDP port 5353 is held by a program that does not share it (TrueNAS's own mDNS service
    /// binds it exclusively).
    #[error(
        "mDNS cannot use UDP port {port}: {source}. Another program holds it without sharing \
         (TrueNAS's own mDNS service does), so this machine neither finds its peers nor is \
         found over mDNS; list the other machines as static peers (cluster.peers, \
         WORMFS_CLUSTER__PEERS or --peer HOST:7712). Everything else works"
    )]
    PortTaken {
        /// The mDNS port.
        port: u16,
        /// What binding it said.
        source: std::io::Error,
    },
}

/// The mDNS port (RFC 6762).
pub const MDNS_PORT: u16 = 5353;

/// Checks that the mDNS port can be bound the way the daemon binds it (shared: address and
/// port reuse). The daemon itself only logs such a failure at debug level and then sends and
/// hears nothing, so it is checked first.
fn probe_port(port: u16) -> Result<(), DiscoveryError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let taken = |source| DiscoveryError::PortTaken { port, source };
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(taken)?;
    sock.set_reuse_address(true).map_err(taken)?;
    sock.set_reuse_port(true).map_err(taken)?;
    let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port);
    sock.bind(&addr.into()).map_err(taken)?;
    Ok(())
}

/// The host name a node advertises its services under.
pub fn host_name(node_id: u64) -> String {
    format!("wormfs-{node_id:016x}.local.")
}

/// A service to advertise.
#[derive(Debug, Clone)]
pub struct Advert {
    /// DNS-SD type, e.g. [`WEBDAV`].
    pub service_type: String,
    /// Instance name people see, e.g. "WormFS on nas".
    pub instance: String,
    /// Host name, from [`host_name`].
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The one address to advertise, or `None` for every address of the machine (kept up to
    /// date as interfaces come and go).
    pub address: Option<IpAddr>,
    /// TXT record entries, e.g. `path=/`.
    pub txt: Vec<(String, String)>,
}

/// A running mDNS responder with the services it advertises.
pub struct Mdns {
    daemon: ServiceDaemon,
    registered: Vec<String>,
}

impl Mdns {
    /// Starts the responder (it joins multicast on every interface).
    pub fn start() -> Result<Self, DiscoveryError> {
        probe_port(MDNS_PORT)?;
        Ok(Self {
            daemon: ServiceDaemon::new()?,
            registered: Vec::new(),
        })
    }

    /// Advertises `advert` until [`Mdns::shutdown`].
    pub fn advertise(&mut self, advert: &Advert) -> Result<(), DiscoveryError> {
        let addresses: Vec<IpAddr> = advert.address.into_iter().collect();
        let txt: Vec<(&str, &str)> = advert
            .txt
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let info = ServiceInfo::new(
            &advert.service_type,
            &advert.instance,
            &advert.host,
            &addresses[..],
            advert.port,
            &txt[..],
        )?;
        let info = if advert.address.is_none() {
            info.enable_addr_auto()
        } else {
            info
        };
        let name = info.get_fullname().to_owned();
        self.daemon.register(info)?;
        tracing::info!(service = %name, host = %advert.host, port = advert.port, "mDNS: advertising");
        self.registered.push(name);
        Ok(())
    }

    /// Withdraws every advertisement (goodbye packets, so browsers drop them at once) and stops.
    pub fn shutdown(self) {
        for name in &self.registered {
            match self.daemon.unregister(name) {
                Ok(rx) => {
                    let _ = rx.recv_timeout(Duration::from_secs(2));
                }
                Err(e) => tracing::warn!("mDNS: withdraw {name}: {e}"),
            }
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// A service found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// DNS-SD type.
    pub service_type: String,
    /// Full instance name.
    pub instance: String,
    /// Host name.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Addresses (IPv4 first).
    pub addresses: Vec<IpAddr>,
    /// TXT record.
    pub txt: BTreeMap<String, String>,
}

/// Services of the given types seen on the LAN, merged as they resolve: the first resolution
/// of a service may carry only some of its addresses (only the IPv6 link-local one, say), so
/// addresses and TXT entries from later ones are added to what is known.
pub struct Watcher {
    receivers: Vec<mdns_sd::Receiver<ServiceEvent>>,
    found: BTreeMap<String, Found>,
}

impl Watcher {
    fn new(daemon: &ServiceDaemon, service_types: &[&str]) -> Result<Self, DiscoveryError> {
        Ok(Self {
            receivers: service_types
                .iter()
                .map(|t| daemon.browse(t))
                .collect::<Result<Vec<_>, _>>()?,
            found: BTreeMap::new(),
        })
    }

    /// Takes in what has arrived (never waits) and returns every service known now.
    pub fn poll(&mut self) -> Vec<Found> {
        for rx in &self.receivers {
            while let Ok(event) = rx.try_recv() {
                match event {
                    ServiceEvent::ServiceResolved(s) => {
                        let entry = self
                            .found
                            .entry(s.fullname.clone())
                            .or_insert_with(|| Found {
                                service_type: s.ty_domain.clone(),
                                instance: s.fullname.clone(),
                                host: s.host.clone(),
                                port: s.port,
                                addresses: Vec::new(),
                                txt: BTreeMap::new(),
                            });
                        entry.host = s.host.clone();
                        entry.port = s.port;
                        for a in &s.addresses {
                            let ip = a.to_ip_addr();
                            if !entry.addresses.contains(&ip) {
                                entry.addresses.push(ip);
                            }
                        }
                        entry.addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
                        for p in s.txt_properties.iter() {
                            entry.txt.insert(p.key().to_owned(), p.val_str().to_owned());
                        }
                    }
                    ServiceEvent::ServiceRemoved(_, name) => {
                        self.found.remove(&name);
                    }
                    _ => {}
                }
            }
        }
        self.found.values().cloned().collect()
    }
}

impl Mdns {
    /// Starts watching for services of the given types on this daemon.
    pub fn watch(&self, service_types: &[&str]) -> Result<Watcher, DiscoveryError> {
        Watcher::new(&self.daemon, service_types)
    }
}

/// Addresses worth dialling: IPv6 link-local addresses are left out, as they cannot be used
/// without the interface they were seen on.
pub fn dialable(addresses: &[IpAddr]) -> Vec<IpAddr> {
    addresses
        .iter()
        .copied()
        .filter(|ip| match ip {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(_) => true,
        })
        .collect()
}

/// Browses for `wait` and returns the services found, merged as [`Watcher`] does.
pub fn browse(service_types: &[&str], wait: Duration) -> Result<Vec<Found>, DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    let mut watcher = Watcher::new(&daemon, service_types)?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        watcher.poll();
        std::thread::sleep(Duration::from_millis(50));
    }
    let found = watcher.poll();
    if let Ok(rx) = daemon.shutdown() {
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_addresses_are_not_dialled() {
        let ips: Vec<IpAddr> = ["fe80::1", "192.168.1.20", "fd00::5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(dialable(&ips), vec![ips[1], ips[2]]);
    }

    #[test]
    fn host_names_are_our_own() {
        assert_eq!(host_name(0x2a), "wormfs-000000000000002a.local.");
    }
}
