//! The peer network's settings, as `config` resolves them from the command line, environment
//! and config file. Plain data: parsing multiaddrs and peer ids is left to the node, which
//! names the option when one is bad. Always compiled (`config` holds it with or without the
//! `p2p` feature), so it must not depend on libp2p or on the rest of the node.

use std::time::Duration;

/// The default grace period of a peer we have just met: time to see its first probe.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(6 * 3600);

/// Inbound peer connections (under way or established) from one IPv4 address or IPv6 /64 by
/// default: a few nodes behind one NAT are normal; dozens are one host minting identities.
pub const DEFAULT_MAX_PER_IP: usize = 8;

/// Peer-to-peer settings.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub bootstrap: Vec<String>,
    /// Multiaddrs to listen on (parsed when the node starts).
    pub listen: Vec<String>,
    /// Find peers on the local network with mDNS.
    pub mdns: bool,
    /// Accept events whose source is private or loopback (labs and tests).
    pub allow_private: bool,
    /// How long a newly met peer is served before it must contribute.
    pub grace: Duration,
    /// Peer ids always served, contributing or not.
    pub trusted: Vec<String>,
    /// Inbound connections from one address (IPv4) or /64 (IPv6) at most.
    pub max_per_ip: usize,
}
