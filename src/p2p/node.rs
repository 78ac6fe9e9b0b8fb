//! The libp2p node: transports (QUIC, and TCP with Noise and Yamux), gossipsub with strict
//! signing, manual validation and peer scoring, catch-up and peer exchange over
//! request-response, identify, and mDNS on the local network. One task owns the swarm and does
//! everything in turn; only database pages for catch-up are read on a blocking thread.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use libp2p::core::Transport as _;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::ListenerId;
use libp2p::core::upgrade::Version;
use libp2p::futures::{AsyncRead, AsyncWrite, StreamExt};
use libp2p::gossipsub::{
    self, IdentTopic, MessageAcceptance, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds,
    PublishError, TopicScoreParams, ValidationMode,
};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, identify, mdns, noise, quic, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use super::bootstrap::{self, Bootstrap};
use super::catchup::{self, Cursor, PeerAddrs, Request, Response};
use super::standing::{Ledger, Limiter, OUTBOUND_LIMITS, PER_AUTHOR_LIMITS};
use super::validate::{self, Policy};
use super::{P2pHandle, PeerInfo, PeersSnapshot, TOPIC};
use crate::app::StartError;
use crate::config::{ConfigError, PeerConfig};
use crate::event::{Event, Origin, format_timestamp};
use crate::metrics::Counters;
use crate::pipeline::{OutputQueue, OutputStats, Pipeline};
use crate::store::ReadPool;

/// The largest gossip frame: one event at its limit plus the signature and framing.
const MAX_GOSSIP_BYTES: usize = validate::MAX_WIRE_EVENT_BYTES + 4 * 1024;
/// Peers each node forwards every event to (gossipsub's D).
const MESH_DEGREE: usize = 4;
/// Messages larger than this are announced with IDONTWANT to mesh peers (see `build_swarm`).
const IDONTWANT_THRESHOLD_BYTES: usize = 512;
/// How often standings become scores, and dials are retried.
const TICK: Duration = Duration::from_secs(1);
/// Gossipsub heartbeat: mesh upkeep and gossip. One second is gossipsub's own default.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long startup waits for the listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Events published per turn of the loop, so the swarm keeps being driven under a flood.
const PUBLISH_BATCH: usize = 256;
/// Event UUIDs remembered in memory to drop duplicates before asking the database (about
/// 5 MB): more than a day of events on a busy network.
const SEEN_CAPACITY: usize = 100_000;
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
/// How far before the last moment we were in touch catch-up starts again: covers events in
/// flight and clocks a little apart.
const CATCH_UP_OVERLAP: Duration = Duration::from_secs(10 * 60);
/// Pages fetched from one peer in one session at most (about a million events): a week of a
/// busy network, and a bound on what one dishonest peer can push into our database this way.
const MAX_PAGES_PER_SESSION: u32 = 4_000;
/// Invalid events in one page after which the session with that peer is abandoned.
const MAX_INVALID_PER_PAGE: usize = 16;
/// Catch-up sessions running at once: more would mostly fetch the same events twice.
const MAX_CONCURRENT_CATCH_UPS: usize = 2;
/// Authors whose rate we track at most; idle ones are forgotten past this.
const MAX_TRACKED_AUTHORS: usize = 10_000;
/// An idle connection (no gossip, no request) is closed after this.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Replies from the catch-up page readers waiting for the network task.
const SERVED_QUEUE: usize = 64;
/// `/peers` queries waiting for the network task.
const QUERY_QUEUE: usize = 16;

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    catch_up: request_response::cbor::Behaviour<Request, Response>,
    identify: identify::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// What the node needs from the rest of the application.
pub struct Start<'a> {
    pub config: &'a PeerConfig,
    pub db_file: &'a Path,
    pub pipeline: Pipeline,
    /// The "peers" output's queue: every event; only local ones are published.
    pub queue: OutputQueue,
    pub counters: Arc<Counters>,
    pub store: Arc<ReadPool>,
    pub node_id: Uuid,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
}

/// Loads the identity, binds every p2p address, dials the bootstrap peers and spawns the
/// network task on `tracker`. Returns once every listener has reported its address.
pub async fn start(s: Start<'_>) -> Result<P2pHandle, StartError> {
    let cfg = s.config;
    let key_path = super::key_path(s.db_file);
    let (key, created) = super::identity::load_or_create(&key_path)
        .map_err(|e| ConfigError::new("-f (--db-file)", key_path.display(), e))?;
    let peer_id = key.public().to_peer_id();
    tracing::info!(%peer_id, key = %key_path.display(), created, "Peer-to-peer identity loaded.");

    let listen = parse_multiaddrs("--p2p-listen", &cfg.listen)?;
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
    let swarm = build_swarm(key, cfg.mdns, (bytes_in.clone(), bytes_out.clone()))?;
    let topic = IdentTopic::new(TOPIC);

    let startup_cursor = {
        let store = s.store.clone();
        tokio::task::spawn_blocking(move || {
            store.with(|c| catchup::startup_cursor(c, SystemTime::now(), CATCH_UP_OVERLAP))
        })
        .await
        .context("reading the newest event")?
        .context("reading the newest event")?
    };

    let (served_tx, served_rx) = mpsc::channel(SERVED_QUEUE);
    let (query_tx, query_rx) = mpsc::channel(QUERY_QUEUE);
    // One lookup per name at a time: sending never waits.
    let (resolved_tx, resolved_rx) = mpsc::channel(bootstrap.len().max(1));
    let now = Instant::now();
    let mut node = Node {
        swarm,
        topic,
        peer_id,
        policy,
        node_id: s.node_id,
        pipeline: s.pipeline,
        counters: s.counters,
        store: s.store,
        out_stats: s.queue.stats.clone(),
        ledger: Ledger::new(trusted, cfg.grace),
        authors: HashMap::new(),
        outbound: Limiter::new(OUTBOUND_LIMITS, now),
        seen: Seen::default(),
        bootstrap,
        resolved_tx,
        resolving: 0,
        startup_cursor,
        resume: HashMap::new(),
        requests: HashMap::new(),
        catching_up: HashSet::new(),
        waiting_catch_up: VecDeque::new(),
        meta: HashMap::new(),
        served_tx,
        tracker: s.tracker.clone(),
        listen: Vec::new(),
        bytes: (bytes_in.clone(), bytes_out.clone()),
        last_redial: now,
        last_exchange: now,
        exchange_interval: PEER_EXCHANGE_MIN_INTERVAL,
        mesh_short_since: None,
        warned_alone: false,
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
    if node.bootstrap.is_empty() {
        if cfg.mdns {
            tracing::info!(
                "No bootstrap peer (-b): looking for peers on the local network with mDNS; peers can also connect to the addresses above."
            );
        } else {
            tracing::warn!(
                "No bootstrap peer (-b) and mDNS is off: nothing to connect to; waiting for peers to connect to the addresses above."
            );
        }
    }
    node.dial_bootstrap();

    let handle = P2pHandle::new(
        peer_id.to_string(),
        node.listen.iter().map(|a| a.to_string()).collect(),
        (bytes_in, bytes_out),
        query_tx,
    );
    let cancel = s.cancel;
    s.tracker.spawn(
        node.run(s.queue, query_rx, served_rx, resolved_rx, cancel)
            .instrument(tracing::info_span!("p2p", %peer_id)),
    );
    Ok(handle)
}

fn parse_multiaddrs(option: &str, values: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    values
        .iter()
        .map(|v| {
            v.parse::<Multiaddr>()
                .map_err(|e| ConfigError::new(option, v, e))
        })
        .collect()
}

fn build_swarm(
    key: libp2p::identity::Keypair,
    mdns_on: bool,
    bytes: (Arc<AtomicU64>, Arc<AtomicU64>),
) -> Result<Swarm<Behaviour>, StartError> {
    let topic = IdentTopic::new(TOPIC);
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let tcp = tcp::tokio::Transport::new(tcp::Config::new().nodelay(true))
                    .map(move |stream, _| Counted {
                        inner: stream,
                        read: bytes.0.clone(),
                        written: bytes.1.clone(),
                    })
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default())
                    .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
                let quic = quic::tokio::Transport::new(quic::Config::new(key))
                    .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));
                Ok(quic.or_transport(tcp).map(|either, _| either.into_inner()))
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot set up the peer-to-peer transports: {e}"))?
        .with_behaviour(
            |key| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let config = gossipsub::ConfigBuilder::default()
                    .validation_mode(ValidationMode::Strict)
                    .validate_messages()
                    .max_transmit_size(MAX_GOSSIP_BYTES)
                    .heartbeat_interval(HEARTBEAT)
                    // Our own events go to the mesh like any other, not to every peer:
                    // flooding them doubled the bytes per event for no gain in reach.
                    .flood_publish(false)
                    // Degree 4 (3..6) rather than 6 (5..12): every message is verified once per
                    // copy received, and a bad-actor list needs reach, not the last 100 ms.
                    .mesh_n(MESH_DEGREE)
                    .mesh_n_low(MESH_DEGREE - 1)
                    .mesh_n_high(MESH_DEGREE + 2)
                    .mesh_outbound_min(MESH_DEGREE / 2)
                    .gossip_lazy(MESH_DEGREE)
                    // An event is about 1 KiB; telling mesh peers "I have it" costs about 50
                    // bytes and saves them sending us duplicates (the default threshold,
                    // 1 KiB, is just above our messages).
                    .idontwant_message_size_threshold(IDONTWANT_THRESHOLD_BYTES)
                    .idontwant_on_publish(true)
                    .build()?;
                let mut gossipsub =
                    gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)?;
                gossipsub.with_peer_score(score_params(&topic), PeerScoreThresholds::default())?;
                gossipsub.subscribe(&topic)?;
                let catch_up = request_response::cbor::Behaviour::with_codec(
                    request_response::cbor::codec::Codec::default()
                        .set_request_size_maximum(catchup::MAX_REQUEST_BYTES)
                        .set_response_size_maximum(catchup::MAX_RESPONSE_BYTES),
                    [(
                        StreamProtocol::new(catchup::PROTOCOL),
                        ProtocolSupport::Full,
                    )],
                    request_response::Config::default(),
                );
                let identify = identify::Behaviour::new(
                    identify::Config::new("/sentrypeer/1.0.0".into(), key.public())
                        .with_agent_version(format!("sentrypeer/{}", crate::event::APP_VERSION)),
                );
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        key.public().to_peer_id(),
                    )?)
                } else {
                    None
                };
                Ok(Behaviour {
                    gossipsub,
                    catch_up,
                    identify,
                    mdns: Toggle::from(mdns),
                })
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot set up the peer-to-peer protocols: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

/// Gossipsub scoring: invalid messages cost a lot and decay slowly; the application score
/// (tit-for-tat standing) decides who stays in the mesh; delivery-rate penalties are off,
/// because bad actors arrive when they arrive, not at a steady rate.
fn score_params(topic: &IdentTopic) -> PeerScoreParams {
    let mut params = PeerScoreParams {
        app_specific_weight: 1.0,
        topic_score_cap: 100.0,
        ..Default::default()
    };
    // Many nodes behind one address are normal on a loopback lab; on the internet they are not.
    params
        .ip_colocation_factor_whitelist
        .insert(IpAddr::from([127, 0, 0, 1]));
    params
        .ip_colocation_factor_whitelist
        .insert(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
    params.topics.insert(
        topic.hash(),
        TopicScoreParams {
            topic_weight: 1.0,
            time_in_mesh_weight: 0.01,
            time_in_mesh_quantum: Duration::from_secs(1),
            time_in_mesh_cap: 1000.0,
            first_message_deliveries_weight: 1.0,
            first_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(
                3600,
            )),
            first_message_deliveries_cap: 50.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            // Squared: one invalid message costs 20 (no more gossip to it), two cost 80
            // (graylisted: ignored). Decays to a tenth in ten minutes.
            invalid_message_deliveries_weight: -20.0,
            invalid_message_deliveries_decay: gossipsub::score_parameter_decay(
                Duration::from_secs(600),
            ),
            ..Default::default()
        },
    );
    params
}

/// A TCP stream that counts the bytes it carries (after encryption: what is on the wire).
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Recent event UUIDs, oldest forgotten first.
#[derive(Default)]
struct Seen {
    set: HashSet<Uuid>,
    order: VecDeque<Uuid>,
}

impl Seen {
    fn contains(&self, id: &Uuid) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: Uuid) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > SEEN_CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

enum Pending {
    CatchUp { peer: PeerId, pages: u32, new: u64 },
    Peers,
}

/// A bootstrap host name's addresses, looked up beside the network task.
struct Resolved {
    name: String,
    addrs: std::io::Result<Vec<Multiaddr>>,
}

struct Served {
    channel: ResponseChannel<Response>,
    peer: PeerId,
    response: Response,
}

#[derive(Default)]
struct PeerMeta {
    connections: HashMap<ConnectionId, Multiaddr>,
    listen: Vec<Multiaddr>,
    agent: Option<String>,
}

struct Node {
    swarm: Swarm<Behaviour>,
    topic: IdentTopic,
    peer_id: PeerId,
    policy: Policy,
    node_id: Uuid,
    pipeline: Pipeline,
    counters: Arc<Counters>,
    store: Arc<ReadPool>,
    out_stats: Arc<OutputStats>,
    ledger: Ledger<PeerId>,
    authors: HashMap<PeerId, Limiter>,
    outbound: Limiter,
    seen: Seen,
    bootstrap: Vec<Bootstrap>,
    /// Where bootstrap host names' addresses come back, and how many lookups are under way.
    resolved_tx: mpsc::Sender<Resolved>,
    resolving: usize,
    startup_cursor: Cursor,
    /// Where catch-up resumes with a peer we were connected to earlier in this run.
    resume: HashMap<PeerId, Cursor>,
    requests: HashMap<OutboundRequestId, Pending>,
    catching_up: HashSet<PeerId>,
    waiting_catch_up: VecDeque<PeerId>,
    meta: HashMap<PeerId, PeerMeta>,
    served_tx: mpsc::Sender<Served>,
    tracker: TaskTracker,
    listen: Vec<Multiaddr>,
    bytes: (Arc<AtomicU64>, Arc<AtomicU64>),
    last_redial: Instant,
    last_exchange: Instant,
    /// The wait before the next peer-exchange round while short of peers.
    exchange_interval: Duration,
    /// Since when the mesh has been below [`MESH_LOW`] with peers connected.
    mesh_short_since: Option<Instant>,
    /// Whether "cannot reach any peer" was said since the last connection.
    warned_alone: bool,
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
                    self.listen.push(address);
                }
                other => self.on_swarm_event(other),
            }
        }
        Ok(())
    }

    async fn run(
        mut self,
        mut queue: OutputQueue,
        mut query: mpsc::Receiver<oneshot::Sender<PeersSnapshot>>,
        mut served: mpsc::Receiver<Served>,
        mut resolved: mpsc::Receiver<Resolved>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        let mut queue_open = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                n = queue.recv_many(&mut batch, PUBLISH_BATCH), if queue_open => {
                    if n == 0 {
                        queue_open = false;
                    } else {
                        self.publish_local(&batch);
                        batch.clear();
                    }
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(reply) = query.recv() => {
                    let _ = reply.send(self.snapshot());
                }
                Some(s) = served.recv() => self.respond(s),
                Some(r) = resolved.recv() => self.on_resolved(r),
                _ = tick.tick() => self.on_tick(),
            }
        }
        tracing::info!("Peer-to-peer node stopped.");
    }

    /// Publishes this node's own events; peers' events are not ours to re-publish (gossipsub
    /// forwards them already).
    fn publish_local(&mut self, batch: &[Arc<Event>]) {
        let now = SystemTime::now();
        let inow = Instant::now();
        for event in batch {
            if event.origin != Origin::Local {
                self.out_stats.wrote(1);
                continue;
            }
            if let Err(why) = validate::shareable(event, now, self.policy) {
                tracing::debug!(reason = %why, uuid = %event.uuid, "Not sharing an event.");
                self.out_stats.failed(1);
                continue;
            }
            let data = validate::encode(event);
            if !self.outbound.admit(data.len(), inow) {
                self.out_stats.failed(1);
                continue;
            }
            let recipients = self.publish_recipients();
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), data)
            {
                Ok(_) => {
                    self.out_stats.wrote(1);
                    self.seen.insert(event.uuid);
                    for p in recipients {
                        self.ledger.record(&p, inow).events_sent += 1;
                    }
                }
                Err(PublishError::NoPeersSubscribedToTopic) => {
                    tracing::debug!(uuid = %event.uuid, "No peer to share an event with.");
                    self.out_stats.failed(1);
                }
                Err(e) => {
                    tracing::debug!(error = %e, uuid = %event.uuid, "Could not share an event.");
                    self.out_stats.failed(1);
                }
            }
        }
    }

    /// The peers gossipsub sends our own messages to: our mesh peers (only peers in good
    /// standing stay in it).
    fn publish_recipients(&self) -> Vec<PeerId> {
        let hash = self.topic.hash();
        self.swarm
            .behaviour()
            .gossipsub
            .mesh_peers(&hash)
            .copied()
            .collect()
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::CatchUp(e)) => self.on_request_response(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let meta = self.meta.entry(peer_id).or_default();
                meta.listen = info
                    .listen_addrs
                    .into_iter()
                    .take(catchup::MAX_ADDRS_PER_PEER)
                    .collect();
                meta.agent = Some(info.agent_version.chars().take(64).collect());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if peer != self.peer_id && !self.swarm.is_connected(&peer) {
                        tracing::debug!(%peer, %addr, "Found a peer on the local network.");
                        self.dial(peer, vec![addr]);
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let now = Instant::now();
                self.meta
                    .entry(peer_id)
                    .or_default()
                    .connections
                    .insert(connection_id, endpoint.get_remote_address().clone());
                self.ledger.record(&peer_id, now).connected = true;
                let standing = self.ledger.standing(&peer_id, now);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .set_application_score(&peer_id, standing.app_score());
                self.warned_alone = false;
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "Peer connected.");
                    self.queue_catch_up(peer_id);
                    if self.swarm.connected_peers().count() < TARGET_PEERS {
                        self.ask_for_peers(peer_id);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                if let Some(m) = self.meta.get_mut(&peer_id) {
                    m.connections.remove(&connection_id);
                }
                if num_established == 0 {
                    let since = SystemTime::now()
                        .checked_sub(CATCH_UP_OVERLAP)
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    self.resume.insert(
                        peer_id,
                        Cursor {
                            since: format_timestamp(since),
                            after: None,
                        },
                    );
                    self.ledger.record(&peer_id, Instant::now()).connected = false;
                    self.catching_up.remove(&peer_id);
                    self.waiting_catch_up.retain(|p| *p != peer_id);
                    self.meta.remove(&peer_id);
                    let cause = cause.map(|c| c.to_string()).unwrap_or_default();
                    tracing::info!(peer = %peer_id, %cause, "Peer disconnected.");
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, error = %error, "Could not connect to a peer.");
                if self.swarm.connected_peers().next().is_none() && !self.warned_alone {
                    self.warned_alone = true;
                    tracing::warn!(error = %error, "Cannot reach any peer; still listening, and trying the bootstrap peers again every 10 s.");
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(transport = %"P2P", addr = %address, "Listening.");
                self.listen.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen.retain(|a| *a != address);
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source: from,
            message_id,
            message,
        } = event
        else {
            return;
        };
        let now = Instant::now();
        let len = message.data.len();
        let verdict = self.judge(&from, message.source, &message.data, len, now);
        let acceptance = match verdict {
            Verdict::New(event) => {
                let uuid = event.uuid;
                self.seen.insert(uuid);
                Counters::inc(&self.counters.peer_events_accepted);
                self.ledger.delivered(&from, 1, now);
                // Strict validation: a message that got this far is signed, by its writer.
                if let Some(signer) = message.source {
                    self.ledger.signs_as(&signer, event.node_id);
                    self.ledger.authored(&signer, 1, now);
                }
                // Forwarded to our mesh peers other than the one it came from.
                let hash = self.topic.hash();
                let mesh: Vec<PeerId> = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .mesh_peers(&hash)
                    .filter(|p| **p != from && Some(**p) != message.source)
                    .copied()
                    .collect();
                for p in mesh {
                    self.ledger.record(&p, now).events_sent += 1;
                }
                tracing::debug!(peer = %from, %uuid, "Accepted an event from a peer.");
                self.pipeline.publish(*event);
                MessageAcceptance::Accept
            }
            Verdict::Duplicate => MessageAcceptance::Ignore,
            Verdict::Limited => {
                self.ledger.record(&from, now).events_limited += 1;
                MessageAcceptance::Ignore
            }
            Verdict::Invalid(why) => {
                Counters::inc(&self.counters.peer_events_rejected);
                self.ledger.record(&from, now).events_rejected += 1;
                tracing::debug!(peer = %from, author = ?message.source, reason = %why, "Rejected an event from a peer.");
                MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &from, acceptance);
    }

    /// Rate limits, validation and de-duplication of one real-time event.
    fn judge(
        &mut self,
        from: &PeerId,
        author: Option<PeerId>,
        data: &[u8],
        len: usize,
        now: Instant,
    ) -> Verdict {
        if !self.ledger.record(from, now).limiter.admit(len, now) {
            return Verdict::Limited;
        }
        // Strict validation guarantees a signed author.
        let Some(author) = author else {
            return Verdict::Invalid("unsigned".into());
        };
        if self.authors.len() >= MAX_TRACKED_AUTHORS && !self.authors.contains_key(&author) {
            let cutoff = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
            self.authors.retain(|_, l| l.last_used() >= cutoff);
            if self.authors.len() >= MAX_TRACKED_AUTHORS {
                return Verdict::Limited;
            }
        }
        let admitted = self
            .authors
            .entry(author)
            .or_insert_with(|| Limiter::new(PER_AUTHOR_LIMITS, now))
            .admit(len, now);
        if !admitted {
            return Verdict::Limited;
        }
        match validate::decode(
            data,
            SystemTime::now(),
            self.policy,
            Origin::Peer(author.to_string()),
        ) {
            Err(e) => Verdict::Invalid(e.to_string()),
            Ok(event) if event.node_id == self.node_id => Verdict::Duplicate,
            Ok(event) if self.is_known(&event.uuid) => Verdict::Duplicate,
            Ok(event) => Verdict::New(Box::new(event)),
        }
    }

    /// Whether this event is already held: recently seen, or in the database.
    fn is_known(&mut self, uuid: &Uuid) -> bool {
        if self.seen.contains(uuid) {
            return true;
        }
        let id = uuid.hyphenated().to_string();
        let in_db = self
            .store
            .with(|c| {
                c.prepare_cached("SELECT 1 FROM honey WHERE event_uuid = ?1 LIMIT 1")?
                    .exists([&id])
            })
            .unwrap_or(false);
        if in_db {
            self.seen.insert(*uuid);
        }
        in_db
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
            } => match self.requests.remove(&request_id) {
                Some(Pending::CatchUp {
                    peer: asked,
                    pages,
                    new,
                }) if asked == peer => self.on_page(peer, pages, new, response),
                Some(Pending::CatchUp { peer: asked, .. }) => self.end_catch_up(asked),
                Some(Pending::Peers) => self.on_peers(peer, response),
                None => {}
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(Pending::CatchUp { .. }) = self.requests.remove(&request_id) {
                    tracing::debug!(%peer, %error, "Catch-up request failed.");
                    self.end_catch_up(peer);
                }
            }
            _ => {}
        }
    }

    /// Sends an answer; a peer that has gone away meanwhile simply does not get it.
    fn answer(&mut self, channel: ResponseChannel<Response>, response: Response) {
        let _ = self
            .swarm
            .behaviour_mut()
            .catch_up
            .send_response(channel, response);
    }

    /// Answers a peer's request: peer exchange at once, catch-up pages from the database on a
    /// blocking thread, both only while the peer is in good standing.
    fn serve(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
        let now = Instant::now();
        let standing = self.ledger.standing(&peer, now);
        if !standing.is_served() {
            tracing::debug!(%peer, "Refused a listener's request.");
            let reason = "no events contributed recently: share to receive".to_string();
            self.answer(channel, Response::Refused { reason });
            return;
        }
        match request {
            Request::Peers => {
                let peers = self.shareable_peers(&peer);
                self.answer(channel, Response::Peers { peers });
            }
            Request::CatchUp { cursor, limit } => {
                if !self.ledger.record(&peer, now).serve.take(1.0, now) {
                    let reason = "too many catch-up requests; slow down".to_string();
                    self.answer(channel, Response::Refused { reason });
                    return;
                }
                let store = self.store.clone();
                let policy = self.policy;
                let tx = self.served_tx.clone();
                self.tracker.spawn_blocking(move || {
                    let response = match store
                        .with(|c| catchup::page(c, &cursor, limit, SystemTime::now(), policy))
                    {
                        Ok((events, next)) => Response::Events { events, next },
                        Err(e) => {
                            tracing::warn!(error = %e, "Cannot read a catch-up page.");
                            Response::Refused {
                                reason: "temporarily unavailable".into(),
                            }
                        }
                    };
                    let _ = tx.blocking_send(Served {
                        channel,
                        peer,
                        response,
                    });
                });
            }
        }
    }

    fn respond(&mut self, s: Served) {
        if let Response::Events { events, .. } = &s.response {
            self.ledger.record(&s.peer, Instant::now()).events_sent += events.len() as u64;
        }
        let _ = self
            .swarm
            .behaviour_mut()
            .catch_up
            .send_response(s.channel, s.response);
    }

    /// Connected peers (other than `asker`) with addresses worth sharing.
    fn shareable_peers(&self, asker: &PeerId) -> Vec<PeerAddrs> {
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
            Some(ip) => self.policy.allow_private || validate::is_public_unicast(ip),
            None => false,
        }
    }

    fn ask_for_peers(&mut self, peer: PeerId) {
        let id = self
            .swarm
            .behaviour_mut()
            .catch_up
            .send_request(&peer, Request::Peers);
        self.requests.insert(id, Pending::Peers);
    }

    fn on_peers(&mut self, from: PeerId, response: Response) {
        let Response::Peers { peers } = response else {
            return;
        };
        let mut room = self.peers_wanted(Instant::now());
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
            if peer == self.peer_id || self.swarm.is_connected(&peer) {
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
                self.dial(peer, addrs);
                room -= 1;
            }
        }
    }

    fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "Cannot dial a peer.");
        }
    }

    /// Dials every bootstrap peer: addresses at once; host names once looked up, beside this
    /// task (a slow resolver must not stall the network), one lookup per name at a time.
    fn dial_bootstrap(&mut self) {
        self.last_redial = Instant::now();
        let lookups = self.resolving == 0;
        for b in self.bootstrap.clone() {
            match (b.literal_addrs(), b) {
                (Some(addrs), _) => addrs.into_iter().for_each(|a| self.dial_bootstrap_addr(a)),
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

    fn on_resolved(&mut self, r: Resolved) {
        self.resolving = self.resolving.saturating_sub(1);
        match r.addrs {
            Ok(addrs) => addrs.into_iter().for_each(|a| self.dial_bootstrap_addr(a)),
            Err(e) => {
                tracing::warn!(bootstrap = %r.name, error = %e, "Cannot resolve the bootstrap peer; will retry.");
            }
        }
    }

    fn dial_bootstrap_addr(&mut self, addr: Multiaddr) {
        tracing::debug!(%addr, "Dialling a bootstrap peer.");
        if let Err(e) = self.swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "Cannot dial the bootstrap peer.");
        }
    }

    /// Catch-up with `peer` runs now, or when a slot frees.
    fn queue_catch_up(&mut self, peer: PeerId) {
        if self.catching_up.contains(&peer) || self.waiting_catch_up.contains(&peer) {
            return;
        }
        if self.catching_up.len() < MAX_CONCURRENT_CATCH_UPS {
            self.begin_catch_up(peer);
        } else {
            self.waiting_catch_up.push_back(peer);
        }
    }

    fn begin_catch_up(&mut self, peer: PeerId) {
        let cursor = self
            .resume
            .remove(&peer)
            .unwrap_or_else(|| self.startup_cursor.clone());
        tracing::debug!(%peer, since = %cursor.since, "Catching up.");
        self.catching_up.insert(peer);
        self.request_page(peer, cursor, 0, 0);
    }

    fn request_page(&mut self, peer: PeerId, cursor: Cursor, pages: u32, new: u64) {
        let id = self.swarm.behaviour_mut().catch_up.send_request(
            &peer,
            Request::CatchUp {
                cursor,
                limit: catchup::MAX_PAGE_EVENTS as u32,
            },
        );
        self.requests
            .insert(id, Pending::CatchUp { peer, pages, new });
    }

    fn on_page(&mut self, peer: PeerId, pages: u32, mut new: u64, response: Response) {
        let Response::Events { events, next } = response else {
            if let Response::Refused { reason } = response {
                tracing::info!(%peer, %reason, "A peer refused catch-up.");
            }
            self.end_catch_up(peer);
            return;
        };
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut invalid = 0;
        let mut fresh = Vec::new();
        for json in events.iter().take(catchup::MAX_PAGE_EVENTS) {
            match validate::decode(
                json.as_bytes(),
                wall,
                self.policy,
                Origin::Peer(peer.to_string()),
            ) {
                Err(why) => {
                    invalid += 1;
                    Counters::inc(&self.counters.peer_events_rejected);
                    tracing::debug!(%peer, reason = %why, "Rejected a caught-up event.");
                }
                Ok(e) if e.node_id == self.node_id || self.is_known(&e.uuid) => {}
                Ok(e) => {
                    self.seen.insert(e.uuid);
                    Counters::inc(&self.counters.peer_events_accepted);
                    fresh.push(e.node_id);
                    self.pipeline.publish(e);
                }
            }
        }
        self.ledger.record(&peer, now).events_rejected += invalid as u64;
        self.ledger.served_page(&peer, &fresh, now);
        new += fresh.len() as u64;
        if invalid > MAX_INVALID_PER_PAGE {
            tracing::warn!(%peer, invalid, "Abandoned catch-up: the peer sends invalid events.");
            self.end_catch_up(peer);
            return;
        }
        match next {
            Some(cursor) if pages + 1 < MAX_PAGES_PER_SESSION && !events.is_empty() => {
                self.request_page(peer, cursor, pages + 1, new)
            }
            Some(cursor) if pages + 1 < MAX_PAGES_PER_SESSION => {
                // A page of nothing but skipped rows still moves on.
                self.request_page(peer, cursor, pages + 1, new)
            }
            _ => {
                if new > 0 {
                    tracing::info!(%peer, events = new, pages = pages + 1, "Caught up with a peer.");
                }
                self.end_catch_up(peer);
            }
        }
    }

    fn end_catch_up(&mut self, peer: PeerId) {
        self.catching_up.remove(&peer);
        while self.catching_up.len() < MAX_CONCURRENT_CATCH_UPS {
            let Some(next) = self.waiting_catch_up.pop_front() else {
                break;
            };
            if self.swarm.is_connected(&next) {
                self.begin_catch_up(next);
            }
        }
    }

    /// Every second: standings become gossipsub scores; lost peers are looked for again.
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
        if peers.is_empty()
            && !self.bootstrap.is_empty()
            && now.duration_since(self.last_redial) >= REDIAL_INTERVAL
        {
            self.dial_bootstrap();
        }
        self.exchange_peers(&peers, now);
    }

    /// Peer exchange while short of peers: fewer connections than [`TARGET_PEERS`], or a mesh
    /// that has stayed below [`MESH_LOW`] (the peers we have will not graft us: their meshes
    /// are full). One connected peer, chosen at random, is asked each round; rounds start
    /// [`PEER_EXCHANGE_MIN_INTERVAL`] apart and slow down while the node stays short.
    fn exchange_peers(&mut self, peers: &[PeerId], now: Instant) {
        let mesh = self.mesh_size();
        if peers.is_empty() || mesh >= MESH_LOW {
            self.mesh_short_since = None;
        } else if self.mesh_short_since.is_none() {
            self.mesh_short_since = Some(now);
        }
        if peers.is_empty() || self.peers_wanted(now) == 0 {
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
        self.ask_for_peers(peer);
    }

    /// Peers in our mesh for the bad-actors topic.
    fn mesh_size(&self) -> usize {
        self.swarm
            .behaviour()
            .gossipsub
            .mesh_peers(&self.topic.hash())
            .count()
    }

    /// How many more peers to dial: up to [`TARGET_PEERS`] connections; beyond that, while the
    /// mesh has been short for [`MESH_SHORT_GRACE`], enough to fill it (up to
    /// [`MESH_SEARCH_MAX_PEERS`] connections).
    fn peers_wanted(&self, now: Instant) -> usize {
        let connected = self.swarm.connected_peers().count();
        let for_target = TARGET_PEERS.saturating_sub(connected);
        let mesh_short = self
            .mesh_short_since
            .is_some_and(|t| now.duration_since(t) >= MESH_SHORT_GRACE);
        if !mesh_short {
            return for_target;
        }
        let mesh = self.mesh_size();
        let for_mesh = MESH_DEGREE
            .saturating_sub(mesh)
            .min(MESH_SEARCH_MAX_PEERS.saturating_sub(connected));
        for_target.max(for_mesh)
    }

    fn snapshot(&self) -> PeersSnapshot {
        let now = Instant::now();
        let gs = &self.swarm.behaviour().gossipsub;
        let mesh: HashSet<PeerId> = gs.mesh_peers(&self.topic.hash()).copied().collect();
        let mut peers: Vec<PeerInfo> = self
            .swarm
            .connected_peers()
            .map(|p| {
                let r = self.ledger.get(p);
                let m = self.meta.get(p);
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
                    seconds_known: r.map_or(0, |r| now.duration_since(r.first_seen).as_secs()),
                    seconds_since_contribution: r
                        .and_then(|r| r.last_contribution)
                        .map(|t| now.duration_since(t).as_secs()),
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

enum Verdict {
    New(Box<Event>),
    Duplicate,
    Limited,
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_parameters_are_valid() {
        let topic = IdentTopic::new(TOPIC);
        score_params(&topic).validate().unwrap();
        PeerScoreThresholds::default().validate().unwrap();
    }

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

    #[test]
    fn seen_forgets_the_oldest_past_its_capacity() {
        let mut s = Seen::default();
        let first = Uuid::new_v4();
        s.insert(first);
        for _ in 0..SEEN_CAPACITY {
            s.insert(Uuid::new_v4());
        }
        assert!(!s.contains(&first));
        assert_eq!(s.set.len(), SEEN_CAPACITY);
    }
}
