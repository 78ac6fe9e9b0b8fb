//! Real-time sharing over gossipsub: publishing this node's own events (handed over by the
//! "peers" output, within the outbound budget; our addresses hidden, then signed with our
//! identity key, see `validate`) and receiving peers' events (per-peer and per-author rate
//! limits, then validation and de-duplication through [`Arrivals`], then the verdict gossipsub
//! acts on: accept and forward, ignore, or reject and score down).
//!
//! A gossip message is published by the author of the event it carries: gossipsub signs the
//! message with the publisher's key, the event carries its author's signature, and the two
//! must be one key. Nodes forward messages (which keeps the publisher) but never publish
//! others' events again; a message whose publisher is not its event's author is rejected.
//!
//! Owns the outbound limiter and the per-author limiters. Depends on the swarm's behaviour, the
//! standing ledger and [`Arrivals`]; must not depend on catch-up sessions or discovery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, PublishError};
use libp2p::{PeerId, Swarm};

use super::arrivals::Arrivals;
use super::halves::LocalBatch;
use super::standing::{Ledger, Limiter, OUTBOUND_LIMITS, PER_AUTHOR_LIMITS};
use super::swarm::Behaviour;
use super::validate::{self, OwnAddresses, Signer};
use crate::event::{Event, Origin};

/// Authors whose rate we track at most; idle ones are forgotten past this.
const MAX_TRACKED_AUTHORS: usize = 10_000;

pub(super) struct Gossip {
    topic: IdentTopic,
    /// Per-author rate limits on what reaches us, whoever relays it.
    authors: HashMap<PeerId, Limiter>,
    /// Our own budget for what we publish.
    outbound: Limiter,
    /// What signs our events.
    signer: Signer,
    /// Our addresses, hidden in what we publish.
    own: Arc<OwnAddresses>,
}

enum Verdict {
    New(Box<Event>),
    Duplicate,
    Limited,
    Invalid(String),
}

impl Gossip {
    pub(super) fn new(
        topic: IdentTopic,
        signer: Signer,
        own: Arc<OwnAddresses>,
        now: Instant,
    ) -> Self {
        Self {
            topic,
            authors: HashMap::new(),
            outbound: Limiter::new(OUTBOUND_LIMITS, now),
            signer,
            own,
        }
    }

    pub(super) fn topic(&self) -> &IdentTopic {
        &self.topic
    }

    /// Publishes this node's own shareable events (the output has filtered them), hidden and
    /// signed; each is counted on the output's stats as written or failed.
    pub(super) fn publish_local(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ledger: &mut Ledger<PeerId>,
        arrivals: &mut Arrivals,
        batch: LocalBatch,
    ) {
        let LocalBatch { events, stats } = batch;
        let now = Instant::now();
        let own = self.own.snapshot();
        for event in events {
            let unsigned = validate::encode(&event, self.signer.node_id(), &own);
            // Signed only once admitted: a flood costs no signatures beyond the budget.
            if !self
                .outbound
                .admit(unsigned.len() + validate::ENVELOPE_BYTES, now)
            {
                stats.failed(1);
                continue;
            }
            let data = self.signer.seal(&unsigned);
            let recipients = self.mesh_peers(swarm);
            match swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), data)
            {
                Ok(_) => {
                    stats.wrote(1);
                    arrivals.remember(event.uuid);
                    // Our mesh peers receive it (only peers in good standing stay in the mesh).
                    for p in recipients {
                        ledger.record(&p, now).events_sent += 1;
                    }
                }
                Err(PublishError::NoPeersSubscribedToTopic) => {
                    tracing::debug!(uuid = %event.uuid, "No peer to share an event with.");
                    stats.failed(1);
                }
                Err(e) => {
                    tracing::debug!(error = %e, uuid = %event.uuid, "Could not share an event.");
                    stats.failed(1);
                }
            }
        }
    }

    /// Our mesh peers for the bad-actors topic: where gossipsub sends what we publish or
    /// forward.
    fn mesh_peers(&self, swarm: &Swarm<Behaviour>) -> Vec<PeerId> {
        let hash = self.topic.hash();
        swarm
            .behaviour()
            .gossipsub
            .mesh_peers(&hash)
            .copied()
            .collect()
    }

    /// A message from a peer: judged, counted, and reported back to gossipsub, which forwards
    /// it only when accepted.
    pub(super) fn on_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ledger: &mut Ledger<PeerId>,
        arrivals: &mut Arrivals,
        event: gossipsub::Event,
    ) {
        let gossipsub::Event::Message {
            propagation_source: from,
            message_id,
            message,
        } = event
        else {
            return;
        };
        let now = Instant::now();
        let verdict = self.judge(ledger, arrivals, &from, message.source, &message.data, now);
        let acceptance = match verdict {
            Verdict::New(event) => {
                let uuid = event.uuid;
                ledger.delivered(&from, 1, now);
                // A message that got this far was published by its event's author.
                if let Some(signer) = message.source {
                    ledger.signs_as(&signer, event.node_id);
                    ledger.authored(&signer, 1, now);
                }
                // Forwarded to our mesh peers other than the one it came from.
                for p in self.mesh_peers(swarm) {
                    if p != from && Some(p) != message.source {
                        ledger.record(&p, now).events_sent += 1;
                    }
                }
                tracing::debug!(peer = %from, %uuid, "Accepted an event from a peer.");
                arrivals.accept(*event);
                MessageAcceptance::Accept
            }
            Verdict::Duplicate => MessageAcceptance::Ignore,
            Verdict::Limited => {
                ledger.record(&from, now).events_limited += 1;
                MessageAcceptance::Ignore
            }
            Verdict::Invalid(why) => {
                arrivals.rejected();
                ledger.record(&from, now).events_rejected += 1;
                tracing::debug!(peer = %from, author = ?message.source, reason = %why, "Rejected an event from a peer.");
                MessageAcceptance::Reject
            }
        };
        swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &from, acceptance);
    }

    /// Rate limits, validation and de-duplication of one real-time event.
    fn judge(
        &mut self,
        ledger: &mut Ledger<PeerId>,
        arrivals: &mut Arrivals,
        from: &PeerId,
        author: Option<PeerId>,
        data: &[u8],
        now: Instant,
    ) -> Verdict {
        let len = data.len();
        if !ledger.record(from, now).limiter.admit(len, now) {
            return Verdict::Limited;
        }
        // Strict validation guarantees a signed publisher, which must be the event's author
        // (checked below): the per-author limit applies to it before anything is decoded.
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
        match arrivals.decode(data, SystemTime::now()) {
            Err(e) => Verdict::Invalid(e.to_string()),
            Ok(event) if event.origin != Origin::Peer(author.to_string()) => {
                Verdict::Invalid("published by a peer other than its author".into())
            }
            Ok(event) if !arrivals.is_new(&event) => Verdict::Duplicate,
            Ok(event) => Verdict::New(Box::new(event)),
        }
    }
}
