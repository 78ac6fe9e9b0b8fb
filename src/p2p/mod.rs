//! The peer-to-peer network (`-p`): real-time sharing of bad actors over gossipsub, catch-up
//! after downtime over request-response, and tit-for-tat enforced by every peer. Every shared
//! event carries its author's signature (`validate`): whoever relays or serves it, a receiver
//! knows who wrote it and that nobody changed it, and records that author.
//!
//! To the rest of the node it is two halves (`halves`): an output that shares this node's own
//! events, registered like any other output, and an intake that publishes peers' events into
//! the pipeline, started and cancelled like any other intake.
//!
//! ```text
//! output (queue "peers") ─► only Origin::Local ─► note its destination as ours ─► shareable? ─┐
//! intake (the network task):                                                                   │
//!   outbound limit ◄─────────────────────────────────────────────────────────────────────────────┘
//!     └─► hide our addresses, sign (ed25519, our identity key) ─► gossipsub (anonymous,
//!         content id, deflated: `wire`)
//!   gossipsub message (inflated within bounds, or refused by gossipsub)
//!                      ─► per-peer limit ─► validate (signature, node id = key's) ─► per-author
//!                        limit ─► dedup (LRU + database; same uuid, other author: refused)
//!                            ├─ invalid: Reject (the sender's gossipsub score falls)
//!                            └─ new: Accept ─► pipeline.publish(Event { origin: Peer(author),
//!                                                signed: the envelope, kept to serve on })
//!   connect ─► catch-up (pages after a cursor, each event validated the same way); pages we
//!              serve: peers' envelopes as received, our own events signed as they are read
//!   every second ─► standing of each peer ─► gossipsub application score
//! ```
//!
//! The pure parts (settings, standing and rate limits) are always compiled; the wire format
//! and its checks (`validate`) and the catch-up messages and pages over the database
//! (`catchup`), which sign and verify with the node's libp2p key, and the libp2p node itself are
//! behind the `p2p` feature:
//!
//! - `halves`: the output and the intake, and the channel between them;
//! - `node`: startup and the network task's event loop, which dispatches to the jobs below;
//! - `swarm`: transports, protocols and scoring, listen addresses;
//! - `wire`: the gossip message format (anonymous, content ids, compressed);
//! - `gossip`: publishing our events, judging peers' real-time events;
//! - `arrivals`: validation, de-duplication and the pipeline, for gossip and catch-up alike;
//! - `sessions`: catch-up sessions, asked and served, within per-peer budgets;
//! - `discovery`: bootstrap peers, mDNS, peer exchange, what we know of each peer;
//! - `limits`: connection limits (in total, per peer, per address, handshakes under way);
//! - `standing_db`: the standing ledger kept in the database across restarts.
//!
//! Nothing here depends on `app`, capture or the other outputs; it talks to the rest of the
//! node through the output boundary, the pipeline, the read pool and the counters.

#[cfg(feature = "p2p")]
pub mod catchup;
pub mod config;
pub mod standing;
#[cfg(feature = "p2p")]
pub mod validate;
#[cfg(feature = "p2p")]
pub mod wire;

#[cfg(feature = "p2p")]
mod arrivals;
#[cfg(feature = "p2p")]
mod bootstrap;
#[cfg(feature = "p2p")]
mod discovery;
#[cfg(feature = "p2p")]
mod gossip;
#[cfg(feature = "p2p")]
mod halves;
#[cfg(feature = "p2p")]
mod identity;
#[cfg(feature = "p2p")]
mod limits;
#[cfg(feature = "p2p")]
mod node;
#[cfg(feature = "p2p")]
mod sessions;
#[cfg(feature = "p2p")]
mod standing_db;
#[cfg(feature = "p2p")]
mod swarm;

pub use config::{DEFAULT_GRACE, DEFAULT_MAX_PER_IP, PeerConfig};
#[cfg(feature = "p2p")]
pub use halves::{IntakeContext, PeersIntake, PeersOutputConfig, halves};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// The gossipsub topic every node publishes and reads bad actors on; the version changes if
/// the wire format does (2: signed by their authors, see `validate`; 3: anonymous gossipsub
/// messages with content ids, compressed, see `wire`).
pub const TOPIC: &str = "sentrypeer/bad-actors/3";
/// Why the peer network could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad setting: exit 2, naming the option.
    #[error(transparent)]
    Config(#[from] crate::settings::ConfigError),
    /// Anything else: exit 1.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// How long the API waits for the peer network to describe itself.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the node's identity key lives: beside its database.
pub fn key_path(db_file: &Path) -> PathBuf {
    let mut s = db_file.as_os_str().to_owned();
    s.push(".p2p-key");
    PathBuf::from(s)
}

/// What the rest of the node (the API, tests) can ask the running peer network.
#[derive(Debug)]
pub struct P2pHandle {
    pub peer_id: String,
    /// The addresses bound at startup.
    pub listen: Vec<String>,
    /// Bytes read from and written to peers over TCP (after encryption: what is on the wire).
    pub bytes_in: Arc<AtomicU64>,
    pub bytes_out: Arc<AtomicU64>,
    query: mpsc::Sender<oneshot::Sender<PeersSnapshot>>,
}

impl P2pHandle {
    pub fn new(
        peer_id: String,
        listen: Vec<String>,
        bytes: (Arc<AtomicU64>, Arc<AtomicU64>),
        query: mpsc::Sender<oneshot::Sender<PeersSnapshot>>,
    ) -> Self {
        Self {
            peer_id,
            listen,
            bytes_in: bytes.0,
            bytes_out: bytes.1,
            query,
        }
    }

    /// The connected peers as the network task sees them now; `None` if it has stopped.
    pub async fn snapshot(&self) -> Option<PeersSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.query.send(tx).await.ok()?;
        tokio::time::timeout(SNAPSHOT_TIMEOUT, rx).await.ok()?.ok()
    }
}

/// `GET /peers`.
#[derive(Debug, Clone, Serialize)]
pub struct PeersSnapshot {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub peers_total: usize,
    pub peers: Vec<PeerInfo>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One connected peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub peer_id: String,
    /// Where we are connected to it.
    pub addresses: Vec<String>,
    /// Where it says it listens.
    pub listen_addrs: Vec<String>,
    pub agent: Option<String>,
    /// `trusted`, `new`, `contributor` or `listener` (see `standing`).
    pub standing: &'static str,
    /// Its gossipsub score (application score included), when scored.
    pub score: Option<f64>,
    /// Whether it is in our gossip mesh (it receives what we forward).
    pub in_mesh: bool,
    /// New valid events it handed us, its own or relayed.
    pub events_received: u64,
    /// New valid events it wrote (whoever handed them to us): what earns its standing.
    pub events_authored: u64,
    pub events_sent: u64,
    pub events_rejected: u64,
    pub events_rate_limited: u64,
    pub seconds_known: u64,
    pub seconds_since_contribution: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_lives_beside_the_database() {
        assert_eq!(
            key_path(Path::new("/var/lib/sentrypeer/sentrypeer.db")),
            PathBuf::from("/var/lib/sentrypeer/sentrypeer.db.p2p-key")
        );
        assert_eq!(
            key_path(Path::new("sentrypeer.db")),
            PathBuf::from("sentrypeer.db.p2p-key")
        );
    }
}
