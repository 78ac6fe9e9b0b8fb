//! The network task: starts the node (identity, settings, swarm, listeners) and runs its one
//! event loop, which owns the swarm and does everything in turn: it reads the swarm, the local
//! events the "peers" output hands over, `/peers` queries, pages read for peers, bootstrap
//! lookups and a one-second tick, and dispatches each to the job it belongs to. Only database
//! pages for catch-up are read on a blocking thread.
//!
//! Owns the swarm, the standing ledger (which every job reads or feeds) and one struct per job:
//! [`Gossip`], [`CatchUp`], [`Discovery`], and [`Arrivals`], the door peers' events come in by.
//! Gossip, catch-up and discovery never call one another (gossip and catch-up both go through
//! `Arrivals`); what crosses jobs (a new connection starts catch-up and peer exchange; who may
//! be served) is decided here. Must not depend on `app`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::futures::StreamExt;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::arrivals::Arrivals;
use super::bootstrap::Bootstrap;
use super::catchup::{Request, Response};
use super::config::PeerConfig;
use super::discovery::{Discovery, Resolved};
use super::gossip::Gossip;
use super::halves::LocalBatch;
use super::limits::Limits;
use super::sessions::{self, CatchUp, Served};
use super::standing::{Admission, Ledger};
use super::standing_db::StandingDb;
use super::swarm::{self, Behaviour, BehaviourEvent};
use super::validate::{OwnAddresses, Policy, Signer};
use super::{P2pHandle, PeerInfo, PeersSnapshot, StartError};
use crate::metrics::Counters;
use crate::pipeline::Pipeline;
use crate::settings::ConfigError;
use crate::store::ReadPool;

/// How often standings become scores, and dials are retried.
const TICK: Duration = Duration::from_secs(1);
/// How long startup waits for the listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// `/peers` queries waiting for the network task.
const QUERY_QUEUE: usize = 16;

/// What the node needs from the rest of the application.
pub(super) struct Start<'a> {
    pub(super) config: &'a PeerConfig,
    /// This node's own shareable events, from the "peers" output.
    pub(super) local: mpsc::Receiver<LocalBatch>,
    pub(super) db_file: &'a Path,
    pub(super) pipeline: Pipeline,
    pub(super) counters: Arc<Counters>,
    pub(super) store: Arc<ReadPool>,
    /// The node's own addresses: its p2p listen addresses are added here.
    pub(super) own: Arc<OwnAddresses>,
    pub(super) cancel: CancellationToken,
    pub(super) tracker: TaskTracker,
}

/// What the event loop reads besides the swarm.
struct Inputs {
    local: mpsc::Receiver<LocalBatch>,
    query: mpsc::Receiver<oneshot::Sender<PeersSnapshot>>,
    served: mpsc::Receiver<Served>,
    resolved: mpsc::Receiver<Resolved>,
}

/// Loads the identity, binds every p2p address, dials the bootstrap peers and spawns the
/// network task on `tracker`. Returns once every listener has reported its address.
pub(super) async fn start(s: Start<'_>) -> Result<P2pHandle, StartError> {
    let cfg = s.config;
    let key_path = super::key_path(s.db_file);
    let (key, created) = super::identity::load_or_create(&key_path)
        .map_err(|e| ConfigError::new("-f (--db-file)", key_path.display(), e))?;
    let peer_id = key.public().to_peer_id();
    let signer = Signer::new(&key).ok_or_else(|| {
        ConfigError::new("-f (--db-file)", key_path.display(), "not an ed25519 key")
    })?;
    tracing::info!(%peer_id, node_id = %signer.node_id(), key = %key_path.display(), created, "Peer-to-peer identity loaded.");

    let listen = swarm::parse_multiaddrs("--p2p-listen", &cfg.listen)?;
    let trusted = cfg
        .trusted
        .iter()
        .map(|t| {
            t.parse::<PeerId>()
                .map_err(|e| ConfigError::new("--p2p-trusted", t, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut bootstrap = Vec::new();
    for b in &cfg.bootstrap {
        bootstrap.push(Bootstrap::parse(b)?);
    }
    let policy = Policy {
        allow_private: cfg.allow_private,
    };

    let bytes_in = Arc::new(AtomicU64::new(0));
    let bytes_out = Arc::new(AtomicU64::new(0));
    let limits = Limits::new(
        cfg.max_per_ip,
        trusted.iter().copied().collect(),
        s.counters.clone(),
    );
    let swarm = swarm::build(key, cfg.mdns, (bytes_in.clone(), bytes_out.clone()), limits)?;
    let topic = swarm::topic();
    let startup_cursor = sessions::startup_cursor(&s.store).await?;
    let (standing_db, saved) = StandingDb::open(s.db_file, s.tracker.clone()).await?;
    let mut ledger = Ledger::new(trusted, cfg.grace);
    ledger.restore(saved, |p| p.parse().ok());

    let counters = s.counters.clone();
    let (served_tx, served_rx) = mpsc::channel(sessions::SERVED_QUEUE);
    let (query_tx, query_rx) = mpsc::channel(QUERY_QUEUE);
    let now = Instant::now();
    let (discovery, resolved_rx) =
        Discovery::new(peer_id, topic.hash(), cfg.allow_private, bootstrap, now);
    let mut node = Node {
        swarm,
        peer_id,
        ledger,
        standing_db,
        counters: counters.clone(),
        arrivals: Arrivals::new(&signer, policy, s.pipeline, s.counters, s.store.clone()),
        gossip: Gossip::new(topic, signer.clone(), s.own.clone(), now),
        catch_up: CatchUp::new(
            s.store,
            policy,
            startup_cursor,
            counters,
            served_tx,
            s.tracker.clone(),
            (signer, s.own.clone()),
        ),
        discovery,
        own: s.own,
        listen: Vec::new(),
        bytes: (bytes_in.clone(), bytes_out.clone()),
    };

    let mut ids = Vec::new();
    for ma in &listen {
        let id = node
            .swarm
            .listen_on(ma.clone())
            .map_err(|e| ConfigError::new("--p2p-listen", ma, e))?;
        ids.push((id, ma.clone()));
    }
    node.await_listeners(ids).await?;
    for ma in &node.listen {
        tracing::info!(transport = %"P2P", addr = %ma, "Listening.");
    }
    node.discovery.begin(&mut node.swarm, cfg.mdns);

    let handle = P2pHandle::new(
        peer_id.to_string(),
        node.listen.iter().map(|a| a.to_string()).collect(),
        (bytes_in, bytes_out),
        query_tx,
    );
    let inputs = Inputs {
        local: s.local,
        query: query_rx,
        served: served_rx,
        resolved: resolved_rx,
    };
    s.tracker.spawn(
        node.run(inputs, s.cancel)
            .instrument(tracing::info_span!("p2p", %peer_id)),
    );
    Ok(handle)
}

struct Node {
    swarm: Swarm<Behaviour>,
    peer_id: PeerId,
    /// Tit-for-tat: what each peer has given and taken.
    ledger: Ledger<PeerId>,
    /// Where the ledger is kept across restarts.
    standing_db: StandingDb,
    counters: Arc<Counters>,
    arrivals: Arrivals,
    gossip: Gossip,
    catch_up: CatchUp,
    discovery: Discovery,
    own: Arc<OwnAddresses>,
    listen: Vec<Multiaddr>,
    bytes: (Arc<AtomicU64>, Arc<AtomicU64>),
}

impl Node {
    /// Drives the swarm until every listener has an address (or fails).
    async fn await_listeners(
        &mut self,
        ids: Vec<(ListenerId, Multiaddr)>,
    ) -> Result<(), StartError> {
        let mut waiting: HashMap<ListenerId, Multiaddr> = ids.into_iter().collect();
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while !waiting.is_empty() {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| anyhow::anyhow!("the peer-to-peer listeners did not start"))?;
            match event {
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } => {
                    if let Some(ma) = waiting.remove(&listener_id) {
                        let why = match reason {
                            Err(e) => e.to_string(),
                            Ok(()) => "closed".into(),
                        };
                        return Err(ConfigError::new("--p2p-listen", ma, why).into());
                    }
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some(ma) = waiting.remove(&listener_id) {
                        return Err(ConfigError::new("--p2p-listen", ma, error).into());
                    }
                }
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    waiting.remove(&listener_id);
                    note_own(&self.own, &address);
                    self.listen.push(address);
                }
                other => self.on_swarm_event(other),
            }
        }
        Ok(())
    }

    /// The event loop, until intake is cancelled. What is still queued then is not published:
    /// the swarm stops with the loop, so nothing more would reach a peer.
    async fn run(mut self, mut inputs: Inputs, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut local_open = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                batch = inputs.local.recv(), if local_open => match batch {
                    Some(batch) => self.gossip.publish_local(
                        &mut self.swarm,
                        &mut self.ledger,
                        &mut self.arrivals,
                        batch,
                    ),
                    None => local_open = false,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(reply) = inputs.query.recv() => {
                    let _ = reply.send(self.snapshot());
                }
                Some(s) = inputs.served.recv() => {
                    self.catch_up.respond(&mut self.swarm, &mut self.ledger, s);
                }
                Some(r) = inputs.resolved.recv() => {
                    self.discovery.on_resolved(&mut self.swarm, r);
                }
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.standing_db.save_now(&mut self.ledger).await;
        tracing::info!("Peer-to-peer node stopped.");
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => {
                self.gossip
                    .on_event(&mut self.swarm, &mut self.ledger, &mut self.arrivals, e)
            }
            SwarmEvent::Behaviour(BehaviourEvent::CatchUp(e)) => self.on_request_response(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.discovery.identified(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                self.discovery.on_mdns(&mut self.swarm, found)
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let now = Instant::now();
                let addr = endpoint.get_remote_address();
                self.discovery
                    .connection_established(peer_id, connection_id, addr.clone());
                if self.ledger.connected(&peer_id, now) == Admission::Refused {
                    Counters::inc(&self.counters.peer_grace_refused);
                }
                let standing = self.ledger.standing(&peer_id, now);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .set_application_score(&peer_id, standing.app_score());
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, %addr, "Peer connected.");
                    self.catch_up
                        .queue(&mut self.swarm, &mut self.ledger, peer_id);
                    self.discovery.peer_connected(&mut self.swarm, peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                self.discovery.connection_closed(peer_id, connection_id);
                if num_established == 0 {
                    self.catch_up.disconnected(peer_id, &self.ledger);
                    self.ledger.disconnected(&peer_id, Instant::now());
                    self.discovery.peer_disconnected(peer_id);
                    let cause = cause.map(|c| c.to_string()).unwrap_or_default();
                    tracing::info!(peer = %peer_id, %cause, "Peer disconnected.");
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                self.discovery.dial_failed(&self.swarm, peer_id, &error)
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(transport = %"P2P", addr = %address, "Listening.");
                note_own(&self.own, &address);
                self.listen.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen.retain(|a| *a != address);
            }
            _ => {}
        }
    }

    fn on_request_response(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.serve(peer, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if self.catch_up.asked(&request_id) {
                    self.catch_up.on_response(
                        &mut self.swarm,
                        &mut self.ledger,
                        &mut self.arrivals,
                        request_id,
                        peer,
                        response,
                    );
                } else if self.discovery.take_request(&request_id) {
                    self.discovery.on_peers(&mut self.swarm, peer, response);
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                // Request ids are unique: only the job that asked knows this one.
                self.catch_up.on_failure(
                    &mut self.swarm,
                    &mut self.ledger,
                    request_id,
                    peer,
                    &error,
                );
                self.discovery.take_request(&request_id);
            }
            _ => {}
        }
    }

    /// Answers a peer's request, only while the peer is in good standing: peer exchange at
    /// once, catch-up pages from the database.
    fn serve(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
        let standing = self.ledger.standing(&peer, Instant::now());
        if !standing.is_served() {
            tracing::debug!(%peer, "Refused a listener's request.");
            let reason = "no events contributed recently: share to receive";
            self.catch_up.refuse(&mut self.swarm, channel, reason);
            return;
        }
        match request {
            Request::Peers => {
                let peers = self.discovery.shareable_peers(&peer);
                swarm::answer(&mut self.swarm, channel, Response::Peers { peers });
            }
            Request::CatchUp { cursor, limit } => self.catch_up.serve(
                &mut self.swarm,
                &mut self.ledger,
                peer,
                cursor,
                limit,
                channel,
            ),
        }
    }

    /// Every second: standings become gossipsub scores; discovery looks for peers.
    fn on_tick(&mut self) {
        let now = Instant::now();
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for p in &peers {
            let score = self.ledger.standing(p, now).app_score();
            self.swarm
                .behaviour_mut()
                .gossipsub
                .set_application_score(p, score);
        }
        self.discovery.on_tick(&mut self.swarm, &peers, now);
        self.catch_up.on_tick(&mut self.swarm, &mut self.ledger);
        self.standing_db.on_tick(&mut self.ledger, now);
    }

    fn snapshot(&self) -> PeersSnapshot {
        let now = Instant::now();
        let gs = &self.swarm.behaviour().gossipsub;
        let mesh: HashSet<PeerId> = gs
            .mesh_peers(&self.gossip.topic().hash())
            .copied()
            .collect();
        let mut peers: Vec<PeerInfo> = self
            .swarm
            .connected_peers()
            .map(|p| {
                let r = self.ledger.get(p);
                let m = self.discovery.meta(p);
                PeerInfo {
                    peer_id: p.to_string(),
                    addresses: m
                        .map(|m| m.connections.values().map(|a| a.to_string()).collect())
                        .unwrap_or_default(),
                    listen_addrs: m
                        .map(|m| m.listen.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default(),
                    agent: m.and_then(|m| m.agent.clone()),
                    standing: self.ledger.standing(p, now).as_str(),
                    score: gs.peer_score(p),
                    in_mesh: mesh.contains(p),
                    events_received: r.map_or(0, |r| r.events_received),
                    events_authored: r.map_or(0, |r| r.events_authored),
                    events_sent: r.map_or(0, |r| r.events_sent),
                    events_rejected: r.map_or(0, |r| r.events_rejected),
                    events_rate_limited: r.map_or(0, |r| r.events_limited),
                    seconds_known: self.ledger.known_for(p, now).map_or(0, |d| d.as_secs()),
                    seconds_since_contribution: self
                        .ledger
                        .since_contribution(p, now)
                        .map(|d| d.as_secs()),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        PeersSnapshot {
            peer_id: self.peer_id.to_string(),
            listen_addrs: self.listen.iter().map(|a| a.to_string()).collect(),
            peers_total: peers.len(),
            peers,
            bytes_in: self.bytes.0.load(Ordering::Relaxed),
            bytes_out: self.bytes.1.load(Ordering::Relaxed),
        }
    }
}

/// Notes the address a listener reports as one of the node's own (hidden in what it shares).
fn note_own(own: &OwnAddresses, address: &Multiaddr) {
    for p in address.iter() {
        match p {
            libp2p::multiaddr::Protocol::Ip4(ip) => own.note(ip.into()),
            libp2p::multiaddr::Protocol::Ip6(ip) => own.note(ip.into()),
            _ => false,
        };
    }
}
