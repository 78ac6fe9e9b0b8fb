//! Finding and keeping peers: dialling the bootstrap peers (host names looked up beside the
//! network task, again while no peer is connected), peers found with mDNS on the local network,
//! and peer exchange (asking a connected peer for others while short of connections or of mesh
//! peers, answering such requests with the peers we know to be reachable). Also what identify
//! and the connections tell us about each peer, which peer exchange shares and `/peers` shows.
//!
//! Owns the bootstrap list and its lookups, the redial and exchange timers, what is known of
//! each connected peer, and the peer-exchange requests in flight. Depends on the swarm's
//! behaviour only; must not depend on gossip, catch-up sessions or the standing ledger.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libp2p::gossipsub::TopicHash;
use libp2p::identify;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::bootstrap::{self, Bootstrap};
use super::catchup::{self, PeerAddrs, Request, Response};
use super::swarm::{Behaviour, MESH_DEGREE};
use super::validate;

/// Peers this node tries to stay connected to; below it, it asks its peers for more.
const TARGET_PEERS: usize = 8;
/// Connections up to which a node whose mesh stays short (the peers it has will not graft it:
/// their meshes are full) dials more peers. Not a limit on inbound connections.
const MESH_SEARCH_MAX_PEERS: usize = 3 * TARGET_PEERS;
/// Gossipsub's lower bound on the mesh: below it, the node is short of mesh peers.
const MESH_LOW: usize = MESH_DEGREE - 1;
/// How long the mesh may stay below [`MESH_LOW`] before more peers are dialled: a few
/// heartbeats, time for gossipsub to graft the peers already connected.
const MESH_SHORT_GRACE: Duration = Duration::from_secs(5);
/// Between attempts to reach the bootstrap peers while no peer is connected.
const REDIAL_INTERVAL: Duration = Duration::from_secs(10);
/// Between peer-exchange rounds while short of peers (connections or mesh): the first wait,
/// doubled after each round while still short, up to the second.
const PEER_EXCHANGE_MIN_INTERVAL: Duration = Duration::from_secs(2);
const PEER_EXCHANGE_MAX_INTERVAL: Duration = Duration::from_secs(60);

/// A bootstrap host name's addresses, looked up beside the network task.
pub(super) struct Resolved {
    name: String,
    addrs: std::io::Result<Vec<Multiaddr>>,
}

/// What we know of a connected peer.
#[derive(Default)]
pub(super) struct PeerMeta {
    /// Where we are connected to it.
    pub(super) connections: HashMap<ConnectionId, Multiaddr>,
    /// Where it says it listens (identify).
    pub(super) listen: Vec<Multiaddr>,
    pub(super) agent: Option<String>,
}

pub(super) struct Discovery {
    own: PeerId,
    mesh_topic: TopicHash,
    allow_private: bool,
    bootstrap: Vec<Bootstrap>,
    /// Where bootstrap host names' addresses come back, and how many lookups are under way.
    resolved_tx: mpsc::Sender<Resolved>,
    resolving: usize,
    last_redial: Instant,
    last_exchange: Instant,
    /// The wait before the next peer-exchange round while short of peers.
    exchange_interval: Duration,
    /// Since when the mesh has been below [`MESH_LOW`] with peers connected.
    mesh_short_since: Option<Instant>,
    /// Whether "cannot reach any peer" was said since the last connection.
    warned_alone: bool,
    meta: HashMap<PeerId, PeerMeta>,
    /// Peer-exchange requests in flight.
    asked: HashSet<OutboundRequestId>,
}

impl Discovery {
    /// Also returns where bootstrap lookups come back, for the network task to read.
    pub(super) fn new(
        own: PeerId,
        mesh_topic: TopicHash,
        allow_private: bool,
        bootstrap: Vec<Bootstrap>,
        now: Instant,
    ) -> (Self, mpsc::Receiver<Resolved>) {
        // One lookup per name at a time: sending never waits.
        let (resolved_tx, resolved_rx) = mpsc::channel(bootstrap.len().max(1));
        let discovery = Self {
            own,
            mesh_topic,
            allow_private,
            bootstrap,
            resolved_tx,
            resolving: 0,
            last_redial: now,
            last_exchange: now,
            exchange_interval: PEER_EXCHANGE_MIN_INTERVAL,
            mesh_short_since: None,
            warned_alone: false,
            meta: HashMap::new(),
            asked: HashSet::new(),
        };
        (discovery, resolved_rx)
    }

    /// Says how peers will be found, and dials the bootstrap peers.
    pub(super) fn begin(&mut self, swarm: &mut Swarm<Behaviour>, mdns: bool) {
        if self.bootstrap.is_empty() {
            if mdns {
                tracing::info!(
                    "No bootstrap peer (-b): looking for peers on the local network with mDNS; peers can also connect to the addresses above."
                );
            } else {
                tracing::warn!(
                    "No bootstrap peer (-b) and mDNS is off: nothing to connect to; waiting for peers to connect to the addresses above."
                );
            }
        }
        self.dial_bootstrap(swarm);
    }

    /// What we know of a connected peer.
    pub(super) fn meta(&self, peer: &PeerId) -> Option<&PeerMeta> {
        self.meta.get(peer)
    }

    /// What a connected peer says of itself (a late report about a peer gone is dropped, so
    /// that `meta` holds connected peers only).
    pub(super) fn identified(&mut self, peer: PeerId, info: identify::Info) {
        let Some(meta) = self.meta.get_mut(&peer) else {
            return;
        };
        meta.listen = info
            .listen_addrs
            .into_iter()
            .take(catchup::MAX_ADDRS_PER_PEER)
            .collect();
        meta.agent = Some(info.agent_version.chars().take(64).collect());
    }

    pub(super) fn on_mdns(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        found: Vec<(PeerId, Multiaddr)>,
    ) {
        for (peer, addr) in found {
            if peer != self.own && !swarm.is_connected(&peer) {
                tracing::debug!(%peer, %addr, "Found a peer on the local network.");
                dial(swarm, peer, vec![addr]);
            }
        }
    }

    pub(super) fn connection_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        addr: Multiaddr,
    ) {
        self.meta
            .entry(peer)
            .or_default()
            .connections
            .insert(connection, addr);
        self.warned_alone = false;
    }

    /// A new peer: asked for others while we have fewer than [`TARGET_PEERS`].
    pub(super) fn peer_connected(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId) {
        if swarm.connected_peers().count() < TARGET_PEERS {
            self.ask_for_peers(swarm, peer);
        }
    }

    pub(super) fn connection_closed(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(m) = self.meta.get_mut(&peer) {
            m.connections.remove(&connection);
        }
    }

    /// A peer's last connection closed.
    pub(super) fn peer_disconnected(&mut self, peer: PeerId) {
        self.meta.remove(&peer);
    }

    pub(super) fn dial_failed(
        &mut self,
        swarm: &Swarm<Behaviour>,
        peer: Option<PeerId>,
        error: &dyn std::fmt::Display,
    ) {
        tracing::debug!(?peer, %error, "Could not connect to a peer.");
        if swarm.connected_peers().next().is_none() && !self.warned_alone {
            self.warned_alone = true;
            tracing::warn!(%error, "Cannot reach any peer; still listening, and trying the bootstrap peers again every 10 s.");
        }
    }

    /// Every tick: lost peers are looked for again; a node short of peers asks for more.
    pub(super) fn on_tick(&mut self, swarm: &mut Swarm<Behaviour>, peers: &[PeerId], now: Instant) {
        if peers.is_empty()
            && !self.bootstrap.is_empty()
            && now.duration_since(self.last_redial) >= REDIAL_INTERVAL
        {
            self.dial_bootstrap(swarm);
        }
        self.exchange_peers(swarm, peers, now);
    }

    /// Connected peers (other than `asker`) with addresses worth sharing.
    pub(super) fn shareable_peers(&self, asker: &PeerId) -> Vec<PeerAddrs> {
        self.meta
            .iter()
            .filter(|(p, _)| *p != asker)
            .filter_map(|(p, m)| {
                let addrs: Vec<String> = m
                    .listen
                    .iter()
                    .filter(|a| self.dialable(a))
                    .take(catchup::MAX_ADDRS_PER_PEER)
                    .map(|a| a.to_string())
                    .collect();
                (!addrs.is_empty()).then(|| PeerAddrs {
                    peer_id: p.to_string(),
                    addrs,
                })
            })
            .take(catchup::MAX_SHARED_PEERS)
            .collect()
    }

    /// Whether an address may be dialled: a public one, or any but unspecified in a lab.
    fn dialable(&self, a: &Multiaddr) -> bool {
        let ip = a.iter().find_map(|p| match p {
            Protocol::Ip4(v4) => Some(IpAddr::V4(v4)),
            Protocol::Ip6(v6) => Some(IpAddr::V6(v6)),
            _ => None,
        });
        match ip {
            Some(ip) if ip.is_unspecified() || ip.is_multicast() => false,
            Some(ip) => self.allow_private || validate::is_public_unicast(ip),
            None => false,
        }
    }

    fn ask_for_peers(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId) {
        let id = swarm
            .behaviour_mut()
            .catch_up
            .send_request(&peer, Request::Peers);
        self.asked.insert(id);
    }

    /// Forgets a request if it is one of ours (answered or failed); returns whether it was.
    pub(super) fn take_request(&mut self, id: &OutboundRequestId) -> bool {
        self.asked.remove(id)
    }

    /// A peer's answer to our request for peers: a random few of them are dialled, as many as
    /// we want.
    pub(super) fn on_peers(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        from: PeerId,
        response: Response,
    ) {
        let Response::Peers { peers } = response else {
            return;
        };
        let mut room = self.peers_wanted(swarm, Instant::now());
        let mut peers: Vec<PeerAddrs> = peers.into_iter().take(catchup::MAX_SHARED_PEERS).collect();
        // Every asker gets the same list in the same order: each takes its own random few, so
        // that not all newcomers dial (and fill the meshes of) the same peers.
        shuffle(&mut peers);
        for p in peers {
            if room == 0 {
                break;
            }
            let Ok(peer) = p.peer_id.parse::<PeerId>() else {
                continue;
            };
            if peer == self.own || swarm.is_connected(&peer) {
                continue;
            }
            let addrs: Vec<Multiaddr> = p
                .addrs
                .iter()
                .take(catchup::MAX_ADDRS_PER_PEER)
                .filter(|a| a.len() <= catchup::MAX_ADDR_LEN)
                .filter_map(|a| a.parse().ok())
                .filter(|a| self.dialable(a))
                .collect();
            if !addrs.is_empty() {
                tracing::debug!(%from, %peer, "Dialling a peer learned from a peer.");
                dial(swarm, peer, addrs);
                room -= 1;
            }
        }
    }

    /// Dials every bootstrap peer: addresses at once; host names once looked up, beside this
    /// task (a slow resolver must not stall the network), one lookup per name at a time.
    fn dial_bootstrap(&mut self, swarm: &mut Swarm<Behaviour>) {
        self.last_redial = Instant::now();
        let lookups = self.resolving == 0;
        for b in self.bootstrap.clone() {
            match (b.literal_addrs(), b) {
                (Some(addrs), _) => addrs
                    .into_iter()
                    .for_each(|a| dial_bootstrap_addr(swarm, a)),
                (None, Bootstrap::Name { host, port }) if lookups => {
                    self.resolving += 1;
                    let tx = self.resolved_tx.clone();
                    tokio::spawn(async move {
                        let addrs = bootstrap::resolve(&host, port).await;
                        let name = format!("{host}:{port}");
                        let _ = tx.send(Resolved { name, addrs }).await;
                    });
                }
                (None, _) => {}
            }
        }
    }

    pub(super) fn on_resolved(&mut self, swarm: &mut Swarm<Behaviour>, r: Resolved) {
        self.resolving = self.resolving.saturating_sub(1);
        match r.addrs {
            Ok(addrs) => addrs
                .into_iter()
                .for_each(|a| dial_bootstrap_addr(swarm, a)),
            Err(e) => {
                tracing::warn!(bootstrap = %r.name, error = %e, "Cannot resolve the bootstrap peer; will retry.");
            }
        }
    }

    /// Peer exchange while short of peers: fewer connections than [`TARGET_PEERS`], or a mesh
    /// that has stayed below [`MESH_LOW`] (the peers we have will not graft us: their meshes
    /// are full). One connected peer, chosen at random, is asked each round; rounds start
    /// [`PEER_EXCHANGE_MIN_INTERVAL`] apart and slow down while the node stays short.
    fn exchange_peers(&mut self, swarm: &mut Swarm<Behaviour>, peers: &[PeerId], now: Instant) {
        let mesh = self.mesh_size(swarm);
        if peers.is_empty() || mesh >= MESH_LOW {
            self.mesh_short_since = None;
        } else if self.mesh_short_since.is_none() {
            self.mesh_short_since = Some(now);
        }
        if peers.is_empty() || self.peers_wanted(swarm, now) == 0 {
            self.exchange_interval = PEER_EXCHANGE_MIN_INTERVAL;
            return;
        }
        if now.duration_since(self.last_exchange) < self.exchange_interval {
            return;
        }
        self.last_exchange = now;
        self.exchange_interval = (self.exchange_interval * 2).min(PEER_EXCHANGE_MAX_INTERVAL);
        let peer = peers[random_below(peers.len())];
        tracing::debug!(%peer, connected = peers.len(), mesh, "Asking a peer for more peers.");
        self.ask_for_peers(swarm, peer);
    }

    /// Peers in our mesh for the bad-actors topic.
    fn mesh_size(&self, swarm: &Swarm<Behaviour>) -> usize {
        swarm
            .behaviour()
            .gossipsub
            .mesh_peers(&self.mesh_topic)
            .count()
    }

    /// How many more peers to dial: up to [`TARGET_PEERS`] connections; beyond that, while the
    /// mesh has been short for [`MESH_SHORT_GRACE`], enough to fill it (up to
    /// [`MESH_SEARCH_MAX_PEERS`] connections).
    fn peers_wanted(&self, swarm: &Swarm<Behaviour>, now: Instant) -> usize {
        let connected = swarm.connected_peers().count();
        let for_target = TARGET_PEERS.saturating_sub(connected);
        let mesh_short = self
            .mesh_short_since
            .is_some_and(|t| now.duration_since(t) >= MESH_SHORT_GRACE);
        if !mesh_short {
            return for_target;
        }
        let mesh = self.mesh_size(swarm);
        let for_mesh = MESH_DEGREE
            .saturating_sub(mesh)
            .min(MESH_SEARCH_MAX_PEERS.saturating_sub(connected));
        for_target.max(for_mesh)
    }
}

fn dial(swarm: &mut Swarm<Behaviour>, peer: PeerId, addrs: Vec<Multiaddr>) {
    let opts = DialOpts::peer_id(peer)
        .addresses(addrs)
        .condition(PeerCondition::DisconnectedAndNotDialing)
        .build();
    if let Err(e) = swarm.dial(opts) {
        tracing::debug!(%peer, error = %e, "Cannot dial a peer.");
    }
}

fn dial_bootstrap_addr(swarm: &mut Swarm<Behaviour>, addr: Multiaddr) {
    tracing::debug!(%addr, "Dialling a bootstrap peer.");
    if let Err(e) = swarm.dial(addr.clone()) {
        tracing::warn!(%addr, error = %e, "Cannot dial the bootstrap peer.");
    }
}

/// A random number below `n` (`n` > 0), from the operating system's randomness.
fn random_below(n: usize) -> usize {
    (Uuid::new_v4().as_u128() % n as u128) as usize
}

/// Fisher-Yates.
fn shuffle<T>(v: &mut [T]) {
    for i in (1..v.len()).rev() {
        v.swap(i, random_below(i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_keeps_every_element_and_random_below_stays_below() {
        let mut v: Vec<usize> = (0..50).collect();
        shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert!((0..1000).all(|_| random_below(3) < 3));
        assert_eq!(random_below(1), 0);
    }
}
