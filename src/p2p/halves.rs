//! The peer network's two halves, as the rest of the node sees them:
//!
//! - an **output**, [`PeersOutputConfig`]: registered with the other outputs, it takes every
//!   event from its pipeline queue ("peers"), notes the address each of this node's own was
//!   sent to as one of the node's (see [`OwnAddresses`]), keeps the shareable ones, and hands
//!   them to the network task through a bounded channel, which hides those addresses and signs
//!   each event as it publishes it;
//! - an **intake**, [`PeersIntake`]: started once the pipeline exists, on the intake tracker,
//!   it runs the network task, which publishes what the output hands it and publishes peers'
//!   events into the pipeline; it stops when intake is cancelled.
//!
//! [`halves`] makes the pair, joined by the channel and by the node's own addresses, which both
//! learn and read. Owns that channel and the output's task; depends on the node only to start
//! it, and must not depend on `app`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::PeerConfig;
use super::validate::{self, OwnAddresses, Policy};
use super::{P2pHandle, StartError, node};
use crate::event::{Event, Origin};
use crate::metrics::Counters;
use crate::output::{self, BuildContext, BuildError, Output, OutputConfig, QueuePolicy, Running};
use crate::pipeline::{OutputQueue, OutputStats, Pipeline};
use crate::store::ReadPool;

/// Events taken from the queue and handed over at once: the network task publishes one batch
/// per turn of its loop, so the swarm keeps being driven under a flood.
const PUBLISH_BATCH: usize = 256;
/// Batches waiting for the network task. One: the output takes no more from its queue until
/// the network task has taken the last batch, so a busy network leaves events in the queue,
/// which is bounded (and counts what it drops) like every other output's.
const LOCAL_BATCHES: usize = 1;
/// How long shutdown waits for the output's task. It ends on its own once the network task has
/// stopped or its queue has closed, both of which happen before outputs are joined.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// This node's own shareable events, on their way to the network task, with the output's stats
/// to count what is shared (written) and what is not (failed).
pub(super) struct LocalBatch {
    pub(super) events: Vec<Arc<Event>>,
    pub(super) stats: Arc<OutputStats>,
}

/// Splits the peer network into its output and its intake, joined by a bounded channel.
pub fn halves(config: &PeerConfig) -> (PeersOutputConfig, PeersIntake) {
    let (tx, rx) = mpsc::channel(LOCAL_BATCHES);
    let own = Arc::new(OwnAddresses::default());
    let output = PeersOutputConfig {
        tx,
        policy: Policy {
            allow_private: config.allow_private,
        },
        own: own.clone(),
    };
    let intake = PeersIntake {
        config: config.clone(),
        local: rx,
        own,
    };
    (output, intake)
}

/// The output half: the "peers" queue, which shares this node's own events.
pub struct PeersOutputConfig {
    tx: mpsc::Sender<LocalBatch>,
    policy: Policy,
    own: Arc<OwnAddresses>,
}

impl OutputConfig for PeersOutputConfig {
    fn name(&self) -> &'static str {
        "peers"
    }

    fn queue(&self) -> Option<QueuePolicy> {
        Some(QueuePolicy::every(output::OUTPUT_QUEUE_EVENTS))
    }

    fn build(&self, _cx: &mut BuildContext<'_>) -> Result<Box<dyn Output>, BuildError> {
        Ok(Box::new(PeersOutput {
            tx: self.tx.clone(),
            policy: self.policy,
            own: self.own.clone(),
        }))
    }
}

struct PeersOutput {
    tx: mpsc::Sender<LocalBatch>,
    policy: Policy,
    own: Arc<OwnAddresses>,
}

impl Output for PeersOutput {
    fn start(self: Box<Self>, queue: Option<OutputQueue>) -> std::io::Result<Running> {
        let queue = queue.ok_or_else(|| std::io::Error::other("the peers output needs a queue"))?;
        let task = tokio::spawn(hand_over(queue, self.tx, self.policy, self.own));
        Ok(Running::Task {
            task,
            grace: STOP_GRACE,
        })
    }
}

/// Takes batches from the queue and hands this node's own shareable events to the network
/// task, until the queue closes or the network task has stopped; every address they were sent
/// to is noted as the node's. Peers' events are not ours to publish (gossipsub forwards them
/// already): they count as written.
async fn hand_over(
    mut queue: OutputQueue,
    tx: mpsc::Sender<LocalBatch>,
    policy: Policy,
    own: Arc<OwnAddresses>,
) {
    let stats = queue.stats.clone();
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        // Room for a batch first, so that events wait in the queue, not here.
        let Ok(permit) = tx.reserve().await else {
            break;
        };
        let got = tokio::select! {
            n = queue.recv_many(&mut batch, PUBLISH_BATCH) => n,
            // The network task has stopped: nothing more will be shared.
            () = tx.closed() => break,
        };
        if got == 0 {
            break;
        }
        let now = SystemTime::now();
        for event in &batch {
            if event.origin == Origin::Local {
                own.note(event.destination.ip());
            }
        }
        let addresses = own.snapshot();
        let mut events = Vec::with_capacity(batch.len());
        for event in batch.drain(..) {
            if event.origin != Origin::Local {
                stats.wrote(1);
                continue;
            }
            if let Err(why) = validate::shareable(&event, now, policy, &addresses) {
                tracing::debug!(reason = %why, uuid = %event.uuid, "Not sharing an event.");
                stats.failed(1);
                continue;
            }
            events.push(event);
        }
        if !events.is_empty() {
            permit.send(LocalBatch {
                events,
                stats: stats.clone(),
            });
        }
    }
    tracing::debug!(output = "peers", "Output closed.");
}

/// The intake half: the network task, which publishes peers' events into the pipeline.
pub struct PeersIntake {
    config: PeerConfig,
    local: mpsc::Receiver<LocalBatch>,
    own: Arc<OwnAddresses>,
}

/// What the intake needs from the rest of the node.
pub struct IntakeContext<'a> {
    pub db_file: &'a Path,
    pub pipeline: Pipeline,
    pub counters: Arc<Counters>,
    pub store: Arc<ReadPool>,
    /// Where the node listens for SIP: its addresses, hidden in every event it shares.
    pub sip_listen: Vec<SocketAddr>,
    /// Intake's cancellation: the network task stops when it fires.
    pub cancel: CancellationToken,
    /// Intake's tracker: shutdown waits for the network task (and catch-up page readers).
    pub tracker: TaskTracker,
}

impl PeersIntake {
    /// Loads the identity, binds every p2p address, dials the bootstrap peers and spawns the
    /// network task on the tracker. Returns once every listener has reported its address.
    pub async fn start(self, cx: IntakeContext<'_>) -> Result<P2pHandle, StartError> {
        for a in &cx.sip_listen {
            self.own.note(a.ip());
        }
        node::start(node::Start {
            config: &self.config,
            local: self.local,
            db_file: cx.db_file,
            pipeline: cx.pipeline,
            counters: cx.counters,
            store: cx.store,
            own: self.own,
            cancel: cx.cancel,
            tracker: cx.tracker,
        })
        .await
    }
}
