//! The put half: an output (queue "opendht") that puts this node's events under `bad_actors`
//! in upstream's format, and with `--opendht-bridge` libp2p peers' events too (their author's
//! node id kept). Events imported from OpenDHT are never put back.
//!
//! What leaves is what the libp2p network shares, unsigned: our addresses hidden, the message
//! cut, and only events a receiver would accept (`p2p::validate::shareable`), within the same
//! outbound budget. Each put is permanent (this node keeps the value alive, as upstream does);
//! only the newest [`MAX_PERMANENT_PUTS`] are, so the memory it takes is bounded: older ones
//! are cancelled and expire from the DHT after OpenDHT's ten minutes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use uuid::Uuid;

use super::ffi::Value;
use super::running::Dht;
use super::{ORIGIN, OpenDhtConfig, USER_TYPE};
use crate::event::{Event, Origin};
use crate::metrics::Counters;
use crate::output::QueuePolicy;
use crate::output::{self, BatchSink, BuildContext, BuildError, OnThread, Output, OutputConfig};
use crate::p2p::standing::{Limiter, OUTBOUND_LIMITS};
use crate::p2p::validate::{self, OwnAddresses, Policy};

/// Values this node keeps alive on the DHT at most: about ten minutes of a busy honeypot's
/// events, a couple of MiB. Older ones expire from the DHT ten minutes after they are let go.
pub(super) const MAX_PERMANENT_PUTS: usize = 1024;

/// The output's settings: the running node and whether to bridge.
pub struct OpenDhtOutputConfig {
    dht: Arc<Dht>,
    bridge: bool,
    policy: Policy,
}

impl OpenDhtOutputConfig {
    pub(super) fn new(dht: Arc<Dht>, config: &OpenDhtConfig) -> Self {
        Self {
            dht,
            bridge: config.bridge,
            policy: Policy {
                allow_private: config.allow_private,
            },
        }
    }
}

impl OutputConfig for OpenDhtOutputConfig {
    fn name(&self) -> &'static str {
        "opendht"
    }

    fn queue(&self) -> Option<QueuePolicy> {
        Some(QueuePolicy {
            events: output::OUTPUT_QUEUE_EVENTS,
            local_only: !self.bridge,
        })
    }

    fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Output>, BuildError> {
        Ok(Box::new(OnThread(Putter {
            dht: self.dht.clone(),
            node_id: cx.node_id,
            bridge: self.bridge,
            policy: self.policy,
            own: OwnAddresses::default(),
            outbound: Limiter::new(OUTBOUND_LIMITS, Instant::now()),
            kept: VecDeque::new(),
            counters: cx.counters.clone(),
        })))
    }
}

struct Putter {
    dht: Arc<Dht>,
    /// This node's id: the `created_by_node_id` of its own events, as upstream writes its own.
    node_id: Uuid,
    bridge: bool,
    policy: Policy,
    /// Addresses probes were sent to: hidden in what leaves.
    own: OwnAddresses,
    outbound: Limiter,
    /// Values kept alive, oldest first.
    kept: VecDeque<Value>,
    counters: Arc<Counters>,
}

impl Putter {
    /// The value's bytes for an event to share, or `None` (not shareable, not ours to relay).
    fn encode(&self, event: &Event, now: SystemTime) -> Option<Vec<u8>> {
        let author = match &event.origin {
            Origin::Local => self.node_id,
            Origin::Peer(p) if self.bridge && p != ORIGIN => event.node_id,
            Origin::Peer(_) => return None,
        };
        let own = self.own.snapshot();
        if let Err(why) = validate::shareable(event, now, self.policy, &own) {
            tracing::debug!(reason = %why, uuid = %event.uuid, "Not putting an event on OpenDHT.");
            return None;
        }
        Some(validate::encode(event, author, &own))
    }

    fn put(&mut self, bytes: &[u8]) {
        let Some(value) = Value::new(bytes, USER_TYPE) else {
            Counters::inc(&self.counters.opendht_puts_failed);
            return;
        };
        let counters = self.counters.clone();
        self.dht.runner.put(&self.dht.key, &value, move |ok| {
            Counters::inc(if ok {
                &counters.opendht_puts_stored
            } else {
                &counters.opendht_puts_failed
            });
        });
        Counters::inc(&self.counters.opendht_puts);
        self.kept.push_back(value);
        while self.kept.len() > MAX_PERMANENT_PUTS {
            if let Some(old) = self.kept.pop_front() {
                self.dht.runner.cancel_put(&self.dht.key, &old);
            }
        }
    }
}

impl BatchSink for Putter {
    fn write(&mut self, batch: &[Arc<Event>]) -> Result<(), String> {
        let now = SystemTime::now();
        for event in batch {
            if event.origin == Origin::Local {
                self.own.note(event.destination.ip());
            }
        }
        for event in batch {
            let Some(bytes) = self.encode(event, now) else {
                continue;
            };
            if !self.outbound.admit(bytes.len(), Instant::now()) {
                Counters::inc(&self.counters.opendht_puts_limited);
                continue;
            }
            // Before the put: the value comes back to our listen at once.
            self.dht.seen.insert(event.uuid);
            self.put(&bytes);
        }
        Ok(())
    }
}
