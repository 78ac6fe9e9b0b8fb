//! Connection limits, as the first behaviour of the swarm: established connections in total,
//! inbound, and per peer; handshakes under way in each direction; inbound connections (under
//! way or established) per remote address, an IPv6 host counted per /64; and the rate at which
//! inbound connections are taken, which is what bounds the state a stream of fresh identities
//! leaves behind (gossipsub remembers a disconnected peer's score for a while). A connection
//! over a limit is refused before any other protocol sees it, and counted
//! (`peer_connections_refused`). Trusted peers are exempt from the limits on established
//! connections (their identity is known only then; the per-address one applies to everyone).
//!
//! Ours rather than libp2p's `connection_limits`, which has no per-address limit and keeps an
//! entry for every peer id that ever connected: identities are free to make, so that grows
//! without bound. Here every entry belongs to a connection and goes when it closes or fails.
//!
//! Owns nothing of the node but these counts. Must not depend on the node's jobs.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

use super::standing::Bucket;
use crate::metrics::Counters;

/// Established connections at most. A node wants [`TARGET_PEERS`](super::discovery) peers (up
/// to three times that while its mesh is short); bootstrap peers are dialled by every newcomer,
/// so they need many more. 128 serves a network of a few hundred nodes and keeps the memory
/// connections take (buffers, protocol state: some tens of KiB each) to a few MiB.
pub(super) const MAX_ESTABLISHED: usize = 128;
/// Of those, inbound at most: the rest stay free for the peers this node chooses to dial, so
/// that peers dialling in cannot crowd them out (an eclipse).
pub(super) const MAX_ESTABLISHED_INCOMING: usize = 96;
/// Per peer: one is enough; two allow a simultaneous dial from both sides, or QUIC and TCP
/// while one replaces the other.
pub(super) const MAX_ESTABLISHED_PER_PEER: usize = 2;
/// Inbound handshakes (Noise, then Yamux) under way at once: each costs a key exchange, so a
/// flood of them is cheap for the sender and dear for us; a peer refused here retries.
pub(super) const MAX_PENDING_INCOMING: usize = 16;
/// Outbound dials under way at once: the bootstrap peers (QUIC and TCP each) and what peer
/// exchange suggests (a couple of dozen at most).
pub(super) const MAX_PENDING_OUTGOING: usize = 32;
/// Inbound connections taken per second, over all addresses, and saved up: peers join a network
/// at a few a minute and a bootstrap peer after an outage sees a few dozen come back at once;
/// a host cycling identities is held to this pace, so what each leaves behind for a while (its
/// gossipsub score, for `RETAIN_SCORE` in `swarm`) stays bounded.
pub(super) const INBOUND_PER_SEC: f64 = 20.0;
pub(super) const INBOUND_BURST: f64 = 100.0;

/// Which limit a connection met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    PendingIncoming,
    PendingOutgoing,
    InboundRate,
    Established,
    EstablishedIncoming,
    PerPeer,
    PerAddress(usize),
}

/// A connection refused by a limit (the cause in the swarm's connection errors).
#[derive(Debug, Clone, Copy)]
pub(super) struct Refused(pub(super) Limit);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Limit::PendingIncoming => write!(
                f,
                "at most {MAX_PENDING_INCOMING} inbound handshakes at once"
            ),
            Limit::PendingOutgoing => {
                write!(f, "at most {MAX_PENDING_OUTGOING} dials at once")
            }
            Limit::InboundRate => {
                write!(f, "at most {INBOUND_PER_SEC} inbound connections a second")
            }
            Limit::Established => write!(f, "at most {MAX_ESTABLISHED} connections"),
            Limit::EstablishedIncoming => {
                write!(f, "at most {MAX_ESTABLISHED_INCOMING} inbound connections")
            }
            Limit::PerPeer => write!(f, "at most {MAX_ESTABLISHED_PER_PEER} connections per peer"),
            Limit::PerAddress(n) => write!(f, "at most {n} inbound connections per address"),
        }
    }
}

impl std::error::Error for Refused {}

/// An established connection: whose, which way, and the address it counts against.
struct Open {
    peer: PeerId,
    inbound: bool,
    address: Option<IpAddr>,
}

/// The bookkeeping, apart from libp2p's callbacks. Every map is keyed by a live connection
/// (or a peer or address with at least one), so all are bounded by the limits themselves.
struct Counts {
    max_per_address: usize,
    /// Inbound handshakes under way, with the address each counts against.
    pending_in: HashMap<ConnectionId, Option<IpAddr>>,
    pending_out: HashSet<ConnectionId>,
    open: HashMap<ConnectionId, Open>,
    open_inbound: usize,
    per_peer: HashMap<PeerId, usize>,
    /// Inbound connections under way or established per address (IPv4, or IPv6 /64).
    per_address: HashMap<IpAddr, usize>,
    /// Peers exempt from the limits on established connections.
    trusted: HashSet<PeerId>,
    /// Inbound connections taken.
    inbound_rate: Bucket,
}

impl Counts {
    fn new(max_per_address: usize, trusted: HashSet<PeerId>) -> Self {
        Self {
            max_per_address,
            pending_in: HashMap::new(),
            pending_out: HashSet::new(),
            open: HashMap::new(),
            open_inbound: 0,
            per_peer: HashMap::new(),
            per_address: HashMap::new(),
            trusted,
            inbound_rate: Bucket::new(INBOUND_PER_SEC, INBOUND_BURST, Instant::now()),
        }
    }

    fn pending_inbound(
        &mut self,
        id: ConnectionId,
        from: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Limit> {
        if self.pending_in.len() >= MAX_PENDING_INCOMING {
            return Err(Limit::PendingIncoming);
        }
        let at_address = from.map_or(0, |a| self.per_address.get(&a).copied().unwrap_or(0));
        if at_address >= self.max_per_address {
            return Err(Limit::PerAddress(self.max_per_address));
        }
        if !self.inbound_rate.take(1.0, now) {
            return Err(Limit::InboundRate);
        }
        if let Some(a) = from {
            *self.per_address.entry(a).or_default() += 1;
        }
        self.pending_in.insert(id, from);
        Ok(())
    }

    fn pending_outbound(&mut self, id: ConnectionId) -> Result<(), Limit> {
        if self.pending_out.len() >= MAX_PENDING_OUTGOING {
            return Err(Limit::PendingOutgoing);
        }
        self.pending_out.insert(id);
        Ok(())
    }

    /// Whether a connection with `peer`, just authenticated, may be established.
    fn establish(&self, peer: &PeerId, inbound: bool) -> Result<(), Limit> {
        if self.trusted.contains(peer) {
            return Ok(());
        }
        if self.open.len() >= MAX_ESTABLISHED {
            return Err(Limit::Established);
        }
        if inbound && self.open_inbound >= MAX_ESTABLISHED_INCOMING {
            return Err(Limit::EstablishedIncoming);
        }
        if self.per_peer.get(peer).copied().unwrap_or(0) >= MAX_ESTABLISHED_PER_PEER {
            return Err(Limit::PerPeer);
        }
        Ok(())
    }

    /// A connection is established: it moves from under way to open.
    fn opened(&mut self, id: ConnectionId, peer: PeerId, inbound: bool) {
        let address = self.pending_in.remove(&id).flatten();
        self.pending_out.remove(&id);
        *self.per_peer.entry(peer).or_default() += 1;
        if inbound {
            self.open_inbound += 1;
        }
        self.open.insert(
            id,
            Open {
                peer,
                inbound,
                address,
            },
        );
    }

    /// A connection closed or failed (at any stage): whatever it held is released.
    fn closed(&mut self, id: ConnectionId) {
        self.pending_out.remove(&id);
        let address = match (self.pending_in.remove(&id), self.open.remove(&id)) {
            (Some(address), _) => address,
            (None, Some(open)) => {
                if open.inbound {
                    self.open_inbound -= 1;
                }
                if let Some(n) = self.per_peer.get_mut(&open.peer) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_peer.remove(&open.peer);
                    }
                }
                open.address
            }
            (None, None) => None,
        };
        if let Some(a) = address {
            if let Some(n) = self.per_address.get_mut(&a) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&a);
                }
            }
        }
    }
}

/// The IP address a multiaddr starts from, as connections are counted per source: an IPv4
/// address, or an IPv6 /64.
fn address_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Ip4(v4) => Some(IpAddr::V4(v4)),
            Protocol::Ip6(v6) => Some(IpAddr::V6(v6)),
            _ => None,
        })
        .map(crate::conn_limits::source_key)
}

/// The behaviour: applies [`Counts`] in libp2p's connection callbacks.
pub(super) struct Limits {
    counts: Counts,
    counters: Arc<Counters>,
}

impl Limits {
    pub(super) fn new(
        max_per_address: usize,
        trusted: HashSet<PeerId>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            counts: Counts::new(max_per_address, trusted),
            counters,
        }
    }

    fn check(&self, r: Result<(), Limit>, what: &str) -> Result<(), ConnectionDenied> {
        r.map_err(|limit| {
            Counters::inc(&self.counters.peer_connections_refused);
            let refused = Refused(limit);
            tracing::debug!(reason = %refused, "Refused a peer {what}.");
            ConnectionDenied::new(refused)
        })
    }
}

impl NetworkBehaviour for Limits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let r = self
            .counts
            .pending_inbound(connection_id, address_of(remote_addr), Instant::now());
        self.check(r, "connection")
    }

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let r = self.counts.establish(&peer, true);
        self.check(r, "connection")?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let r = self.counts.pending_outbound(connection_id);
        self.check(r, "dial")?;
        Ok(vec![])
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let r = self.counts.establish(&peer, false);
        self.check(r, "dial")?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.counts
                    .opened(e.connection_id, e.peer_id, e.endpoint.is_listener())
            }
            FromSwarm::ConnectionClosed(e) => self.counts.closed(e.connection_id),
            FromSwarm::ListenFailure(e) => self.counts.closed(e.connection_id),
            FromSwarm::DialFailure(e) => self.counts.closed(e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    impl Counts {
        /// An inbound connection at a moment when the rate allows it.
        fn pi(&mut self, id: ConnectionId, from: Option<IpAddr>) -> Result<(), Limit> {
            self.inbound_rate = Bucket::new(INBOUND_PER_SEC, INBOUND_BURST, Instant::now());
            self.pending_inbound(id, from, Instant::now())
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(crate::conn_limits::source_key(s.parse().unwrap()))
    }

    #[test]
    fn an_address_is_limited_over_handshakes_and_connections_and_gets_them_back() {
        let mut c = Counts::new(2, HashSet::new());
        let p = PeerId::random();
        c.pi(id(1), ip("192.0.2.1")).unwrap();
        c.pi(id(2), ip("192.0.2.1")).unwrap();
        assert_eq!(c.pi(id(3), ip("192.0.2.1")), Err(Limit::PerAddress(2)));
        c.pi(id(4), ip("192.0.2.2")).unwrap();
        c.establish(&p, true).unwrap();
        c.opened(id(1), p, true);
        // A handshake that fails gives its slot back; so does a closed connection.
        c.closed(id(2));
        c.pi(id(5), ip("192.0.2.1")).unwrap();
        c.closed(id(1));
        c.closed(id(1));
        c.pi(id(6), ip("192.0.2.1")).unwrap();
        assert_eq!(c.pi(id(7), ip("192.0.2.1")), Err(Limit::PerAddress(2)));
        for n in [4, 5, 6] {
            c.closed(id(n));
        }
        assert!(c.per_address.is_empty() && c.pending_in.is_empty());
        assert!(c.open.is_empty() && c.per_peer.is_empty() && c.open_inbound == 0);
    }

    #[test]
    fn an_ipv6_host_counts_per_64() {
        let mut c = Counts::new(1, HashSet::new());
        c.pi(id(1), ip("2001:db8:1:2::1")).unwrap();
        assert!(c.pi(id(2), ip("2001:db8:1:2::ffff")).is_err());
        c.pi(id(3), ip("2001:db8:1:3::1")).unwrap();
        let addr: Multiaddr = "/ip6/2001:db8:1:2:aaaa::1/tcp/4222".parse().unwrap();
        assert_eq!(address_of(&addr), ip("2001:db8:1:2::"));
    }

    #[test]
    fn established_connections_are_limited_in_total_inbound_and_per_peer() {
        let trusted = PeerId::random();
        let mut c = Counts::new(usize::MAX, HashSet::from([trusted]));
        let p = PeerId::random();
        for n in 0..MAX_ESTABLISHED_PER_PEER {
            c.establish(&p, true).unwrap();
            c.opened(id(n), p, true);
        }
        assert_eq!(c.establish(&p, false), Err(Limit::PerPeer));
        let mut n = 100;
        while c.open_inbound < MAX_ESTABLISHED_INCOMING {
            c.opened(id(n), PeerId::random(), true);
            n += 1;
        }
        assert_eq!(
            c.establish(&PeerId::random(), true),
            Err(Limit::EstablishedIncoming)
        );
        while c.open.len() < MAX_ESTABLISHED {
            let q = PeerId::random();
            c.establish(&q, false).unwrap();
            c.opened(id(n), q, false);
            n += 1;
        }
        assert_eq!(
            c.establish(&PeerId::random(), false),
            Err(Limit::Established)
        );
        assert_eq!(
            c.establish(&trusted, true),
            Ok(()),
            "trusted peers are exempt"
        );
        for k in 0..n {
            c.closed(id(k));
        }
        assert!(c.open.is_empty() && c.per_peer.is_empty() && c.open_inbound == 0);
    }

    #[test]
    fn handshakes_under_way_are_limited_in_each_direction() {
        let mut c = Counts::new(usize::MAX, HashSet::new());
        for n in 0..MAX_PENDING_INCOMING {
            c.pi(id(n), ip("192.0.2.1")).unwrap();
        }
        assert_eq!(c.pi(id(999), ip("192.0.2.2")), Err(Limit::PendingIncoming));
        c.closed(id(0));
        c.pi(id(999), ip("192.0.2.2")).unwrap();
        for n in 0..MAX_PENDING_OUTGOING {
            c.pending_outbound(id(n)).unwrap();
        }
        assert_eq!(c.pending_outbound(id(9_999)), Err(Limit::PendingOutgoing));
        c.closed(id(0));
        c.pending_outbound(id(9_999)).unwrap();
    }

    #[test]
    fn inbound_connections_are_taken_at_a_bounded_rate() {
        let mut c = Counts::new(usize::MAX, HashSet::new());
        let t0 = Instant::now();
        c.inbound_rate = Bucket::new(INBOUND_PER_SEC, INBOUND_BURST, t0);
        let mut taken = 0;
        for n in 0..1_000 {
            if c.pending_inbound(id(n), ip("192.0.2.1"), t0).is_ok() {
                taken += 1;
                c.closed(id(n));
            }
        }
        assert_eq!(taken, INBOUND_BURST as usize);
        let later = t0 + std::time::Duration::from_secs(1);
        let more = (1_000..2_000)
            .filter(|n| {
                let ok = c.pending_inbound(id(*n), ip("192.0.2.1"), later).is_ok();
                c.closed(id(*n));
                ok
            })
            .count();
        assert_eq!(more, INBOUND_PER_SEC as usize);
    }
}
