//! Real-time sharing over gossipsub: publishing this node's own events (handed over by the
//! "peers" output, within the outbound budget; our addresses hidden, then signed with our
//! identity key, see `validate`) and receiving peers' events (per-peer and per-author rate
//! limits, then validation and de-duplication through [`Arrivals`], then the verdict gossipsub
//! acts on: accept and forward, ignore, or reject and score down).
//!
//! A gossip message is anonymous (`wire`): the event it carries names its author by its
//! signature, whoever published or forwarded it. Nodes forward messages but never publish
//! others' events again; a copy of an event published again by anyone is the same message (its
//! id is its content) or, re-encoded, a duplicate of an event already held.
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
    /// A new event, and its author.
    New(Box<Event>, PeerId),
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
        let verdict = self.judge(ledger, arrivals, &from, &message.data, now);
        let acceptance = match verdict {
            Verdict::New(event, author) => {
                let uuid = event.uuid;
                ledger.delivered(&from, 1, now);
                // The event's signer wrote it, whoever relayed it.
                ledger.signs_as(&author, event.node_id);
                ledger.authored(&author, 1, now);
                // Forwarded to our mesh peers other than the one it came from.
                for p in self.mesh_peers(swarm) {
                    if p != from && p != author {
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
                tracing::debug!(peer = %from, reason = %why, "Rejected an event from a peer.");
                MessageAcceptance::Reject
            }
        };
        swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &from, acceptance);
    }

    /// Rate limits, validation and de-duplication of one real-time event: the relaying peer's
    /// limit first (which bounds the signatures it can make us verify), then the author's,
    /// once the signature has shown who the author is (a claim alone could spend an honest
    /// author's budget).
    fn judge(
        &mut self,
        ledger: &mut Ledger<PeerId>,
        arrivals: &mut Arrivals,
        from: &PeerId,
        data: &[u8],
        now: Instant,
    ) -> Verdict {
        let len = data.len();
        if !ledger.record(from, now).limiter.admit(len, now) {
            return Verdict::Limited;
        }
        let event = match arrivals.decode(data, SystemTime::now()) {
            Ok(event) => event,
            Err(e) => return Verdict::Invalid(e.to_string()),
        };
        // `decode` names the author by the peer id of the key that signed the event.
        let Some(author) = author_of(&event) else {
            return Verdict::Invalid("no author".into());
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
        if !arrivals.is_new(&event) {
            return Verdict::Duplicate;
        }
        Verdict::New(Box::new(event), author)
    }
}

/// The author of a verified event: the peer id its origin names.
fn author_of(event: &Event) -> Option<PeerId> {
    match &event.origin {
        Origin::Peer(id) => id.parse().ok(),
        Origin::Local => None,
    }
}
