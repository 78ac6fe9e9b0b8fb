//! Upstream's peer network (`--opendht`): an OpenDHT node, through the system's libopendht-c,
//! that puts this node's events under the key `bad_actors` as upstream nodes do and listens on
//! it for theirs, so a node switching from upstream keeps its peers.
//!
//! # Upstream's value format
//!
//! The key is the text `bad_actors`, whose OpenDHT infohash is the SHA-1 of those bytes
//! (`14d30143330e2e0e922ed4028a60ff96a59800ad`). Each value is one bad actor: its data is the
//! compact JSON log object (upstream's thirteen fields: `app_name`, `app_version`,
//! `event_timestamp`, `event_uuid`, `created_by_node_id`, `collected_method`, `transport_type`,
//! `source_ip`, `destination_ip`, `called_number`, `sip_method`, `sip_user_agent`,
//! `sip_message`), without a trailing NUL; its user type is `text/plain`; it is neither signed
//! nor encrypted, and it is put permanently (the putting node keeps it alive).
//!
//! # Two halves, like the libp2p network
//!
//! ```text
//! output (queue "opendht") ─► this node's events (and, with --opendht-bridge, libp2p peers')
//!     ─► shareable? (the checks a receiver applies) ─► our addresses hidden ─► outbound limit
//!     ─► put permanently; the last MAX_PERMANENT_PUTS kept alive, older ones let expire
//! intake: listen on bad_actors (OpenDHT's thread: copy ≤ MAX_VALUE_BYTES, try_send, never block)
//!     ─► bounded channel ─► total limit ─► validate (as a peer's event, no signature)
//!     ─► not ours ─► per-sender limit ─► de-duplicate (UUIDs recently imported or put, then
//!        the database)
//!     ─► pipeline.publish(Event { origin: Peer("opendht") })
//! ```
//!
//! # What an imported value counts for
//!
//! Values are unsigned: anyone can write any `created_by_node_id`. So every OpenDHT value is a
//! report from one unknown author, [`ORIGIN`]: it is stored and logged with
//! `received_from_peer = "opendht"` (its claimed node id kept in `created_by_node_id`), and for
//! the listing rule all of OpenDHT together is one author. It never lists or enforces on its
//! own at the default `--p2p-corroboration 2`: a signed libp2p author must report it too (or the
//! node must see it itself). Such events are never served over libp2p (catch-up serves signed
//! events only). The per-sender limit keys on the claimed node id; the total limit is what
//! bounds a host writing values under many ids.
//!
//! The module depends on the output boundary, the pipeline, the read pool, the counters and
//! `p2p::validate` (the checks), never on `app`. The unsafe code is all in `ffi`.

pub mod config;
#[cfg(feature = "opendht")]
mod ffi;
#[cfg(feature = "opendht")]
mod intake;
#[cfg(feature = "opendht")]
mod output;

pub use config::{OpenDhtConfig, RawOpenDhtConfig};
#[cfg(feature = "opendht")]
pub use intake::{IntakeContext, OpenDhtIntake};
#[cfg(feature = "opendht")]
pub use output::OpenDhtOutputConfig;

/// The key upstream nodes put bad actors under and listen on.
pub const KEY: &str = "bad_actors";
/// `received_from_peer` of every event imported from OpenDHT, and its one author for the
/// listing rule.
pub const ORIGIN: &str = "opendht";
/// The user type of upstream's values.
pub const USER_TYPE: &str = "text/plain";

#[cfg(feature = "opendht")]
pub use running::{Started, start};

#[cfg(feature = "opendht")]
mod running {
    use std::collections::{HashSet, VecDeque};
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::{Arc, Mutex, PoisonError};

    use uuid::Uuid;

    use super::config::OpenDhtConfig;
    use super::ffi::{self, InfoHash, Runner};
    use super::intake::OpenDhtIntake;
    use super::output::OpenDhtOutputConfig;
    use crate::settings::ConfigError;

    /// The OpenDHT node both halves use, the key, and the event UUIDs recently put or
    /// imported.
    pub(super) struct Dht {
        pub(super) runner: Runner,
        pub(super) key: InfoHash,
        pub(super) seen: Arc<Seen>,
    }

    /// Event UUIDs remembered to drop duplicates before asking the database (about 5 MB).
    const SEEN_CAPACITY: usize = 100_000;

    /// Recent event UUIDs, oldest forgotten first.
    #[derive(Default)]
    pub(super) struct Seen(Mutex<SeenInner>);

    #[derive(Default)]
    struct SeenInner {
        set: HashSet<Uuid>,
        order: VecDeque<Uuid>,
    }

    impl Seen {
        pub(super) fn contains(&self, id: &Uuid) -> bool {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .set
                .contains(id)
        }

        pub(super) fn insert(&self, id: Uuid) {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if s.set.insert(id) {
                s.order.push_back(id);
                if s.order.len() > SEEN_CAPACITY {
                    if let Some(old) = s.order.pop_front() {
                        s.set.remove(&old);
                    }
                }
            }
        }
    }

    /// The two halves of a started OpenDHT node.
    pub struct Started {
        pub output: OpenDhtOutputConfig,
        pub intake: OpenDhtIntake,
        /// The UDP port it is bound to.
        pub port: u16,
    }

    /// Binds the OpenDHT node's port and joins the network through the bootstrap node. A port
    /// that cannot be bound is a bad `--opendht-port`.
    pub fn start(config: &OpenDhtConfig) -> Result<Started, ConfigError> {
        let runner = Runner::run(config.port).map_err(|e| {
            ConfigError::new(
                "--opendht-port",
                config.port,
                format!("cannot run an OpenDHT node on this UDP port: {e}"),
            )
        })?;
        // OpenDHT reports no error when the IPv4 socket cannot be bound (it runs on IPv6
        // alone, or on nothing): its bound port is then 0.
        let port = runner.port();
        if port == 0 || (config.port != 0 && port != config.port) {
            return Err(ConfigError::new(
                "--opendht-port",
                config.port,
                "cannot bind this UDP port on IPv4 (in use?)",
            ));
        }
        let key = InfoHash::of(super::KEY);
        tracing::info!(
            transport = %"OPENDHT",
            addr = %SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
            version = %ffi::version(),
            key = %key.hex(),
            "Listening."
        );
        runner.bootstrap(&config.bootstrap_host, &config.bootstrap_port.to_string());
        tracing::info!(
            bootstrap = %format!("{}:{}", config.bootstrap_host, config.bootstrap_port),
            "Joining the OpenDHT network."
        );
        let dht = Arc::new(Dht {
            runner,
            key,
            seen: Arc::default(),
        });
        Ok(Started {
            output: OpenDhtOutputConfig::new(dht.clone(), config),
            intake: OpenDhtIntake::new(dht, config),
            port,
        })
    }
}
