//! Swarm construction: the transports (QUIC, and TCP with Noise and Yamux, counting the bytes
//! on the wire), the connection limits (`limits`), the protocols the node speaks (gossipsub
//! in the `wire` format, with manual validation and peer scoring; catch-up and peer exchange over
//! request-response; identify; mDNS on the local network), and parsing the addresses it
//! listens on.
//!
//! Owns no state of the running node: it builds the [`Swarm`] and hands it over. Must not depend
//! on the node's jobs (gossip, catch-up sessions, discovery) or on the node itself.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::core::Transport as _;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::upgrade::Version;
use libp2p::futures::{AsyncRead, AsyncWrite};
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
};
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, SwarmBuilder, identify, mdns, noise, quic, tcp, yamux,
};

use super::catchup::{self, Request, Response};
use super::limits::Limits;
use super::{StartError, TOPIC};
use super::{validate, wire};
use crate::settings::ConfigError;

/// The largest gossip frame: one event at its limit plus the signature and framing.
const MAX_GOSSIP_BYTES: usize = validate::MAX_WIRE_EVENT_BYTES + 4 * 1024;
/// Peers each node forwards every event to (gossipsub's D).
pub(super) const MESH_DEGREE: usize = 4;
/// Messages larger than this (compressed, see `wire`) are announced with IDONTWANT to mesh
/// peers: telling each of them "I have it" costs about 50 bytes on the wire for every copy
/// received. A typical event compresses to about 350 bytes with its framing, under this, so
/// it goes without; large ones (long messages, bodies) still save their duplicates. Measured
/// in bench/RESULTS.md.
const IDONTWANT_THRESHOLD_BYTES: usize = 512;
/// Gossipsub heartbeat: mesh upkeep and gossip. One second is gossipsub's own default.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long gossipsub remembers the score of a peer that has disconnected with a score of zero
/// or less (so that reconnecting does not wash it clean): as long as an invalid message's
/// penalty takes to fade to a tenth. Gossipsub's default, an hour, times the rate at which
/// inbound connections are taken (`limits::INBOUND_PER_SEC`) is what a host cycling identities
/// could make it remember; ten minutes keep that to about 12,000 peers.
const RETAIN_SCORE: Duration = Duration::from_secs(600);
/// An idle connection (no gossip, no request) is closed after this.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

/// The protocols, in the order libp2p consults them about a new connection: the limits first,
/// so that a refused connection costs the others nothing.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) limits: Limits,
    pub(super) gossipsub: gossipsub::Behaviour<wire::Deflate>,
    pub(super) catch_up: request_response::cbor::Behaviour<Request, Response>,
    pub(super) identify: identify::Behaviour,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The topic every node publishes and reads bad actors on.
pub(super) fn topic() -> IdentTopic {
    IdentTopic::new(TOPIC)
}

/// Sends an answer to a peer's request; a peer that has gone away meanwhile simply does not
/// get it.
pub(super) fn answer(
    swarm: &mut Swarm<Behaviour>,
    channel: ResponseChannel<Response>,
    response: Response,
) {
    let _ = swarm
        .behaviour_mut()
        .catch_up
        .send_response(channel, response);
}

pub(super) fn parse_multiaddrs(
    option: &str,
    values: &[String],
) -> Result<Vec<Multiaddr>, ConfigError> {
    values
        .iter()
        .map(|v| {
            v.parse::<Multiaddr>()
                .map_err(|e| ConfigError::new(option, v, e))
        })
        .collect()
}

pub(super) fn build(
    key: libp2p::identity::Keypair,
    mdns_on: bool,
    bytes: (Arc<AtomicU64>, Arc<AtomicU64>),
    limits: Limits,
) -> Result<Swarm<Behaviour>, StartError> {
    let topic = topic();
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
                let config = wire::config_builder()
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
                    .idontwant_message_size_threshold(IDONTWANT_THRESHOLD_BYTES)
                    .idontwant_on_publish(true)
                    .build()?;
                let mut gossipsub = gossipsub::Behaviour::new_with_transform(
                    MessageAuthenticity::Anonymous,
                    config,
                    wire::Deflate,
                )?;
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
                    limits,
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
        retain_score: RETAIN_SCORE,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_parameters_are_valid() {
        let topic = IdentTopic::new(TOPIC);
        score_params(&topic).validate().unwrap();
        PeerScoreThresholds::default().validate().unwrap();
    }
}
