//! The one door peers' events come in by, whether gossiped in real time or fetched in a
//! catch-up page: decoding and validation (signature included), de-duplication (recently seen
//! UUIDs, then the database), the intake counters, and publishing into the pipeline as
//! `Origin::Peer(author)`, with the signed form for the database to keep.
//!
//! An event UUID belongs to the author that wrote it: the same UUID signed by another key (an
//! event re-signed by someone else) is refused and counted as rejected, never taken as a
//! duplicate or as a second author's report. Which of two claims came first decides, so a
//! re-signed copy that reaches a node before the original is that key's claim there.
//!
//! Owns the recently-seen set. Must not depend on the swarm or on the node's jobs: gossip and
//! catch-up sessions call it; it calls neither.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use rusqlite::OptionalExtension as _;
use uuid::Uuid;

use super::validate::{self, Policy};
use crate::event::{Event, Origin};
use crate::metrics::Counters;
use crate::pipeline::Pipeline;
use crate::store::ReadPool;

/// Event UUIDs remembered in memory to drop duplicates before asking the database (about
/// 5 MB): more than a day of events on a busy network.
const SEEN_CAPACITY: usize = 100_000;

pub(super) struct Arrivals {
    /// This node's node id on the network (its key's).
    node_id: Uuid,
    policy: Policy,
    pipeline: Pipeline,
    counters: Arc<Counters>,
    store: Arc<ReadPool>,
    seen: Seen,
}

impl Arrivals {
    pub(super) fn new(
        signer: &validate::Signer,
        policy: Policy,
        pipeline: Pipeline,
        counters: Arc<Counters>,
        store: Arc<ReadPool>,
    ) -> Self {
        Self {
            node_id: signer.node_id(),
            policy,
            pipeline,
            counters,
            store,
            seen: Seen::default(),
        }
    }

    /// Decodes and validates one signed event from a peer; it names its author.
    pub(super) fn decode(&self, data: &[u8], now: SystemTime) -> Result<Event, validate::Invalid> {
        validate::decode(data, now, self.policy)
    }

    /// Whether a valid event is one we do not hold yet: not our own, not recently seen, not in
    /// the database. One whose UUID we hold from another author is none either, and is counted
    /// as rejected (see the module's documentation).
    pub(super) fn is_new(&mut self, event: &Event) -> bool {
        match self.known(event) {
            Known::No => true,
            Known::Same => false,
            Known::OtherAuthor => {
                self.rejected();
                tracing::debug!(uuid = %event.uuid, author = ?event.origin, "Refused an event held from another author.");
                false
            }
        }
    }

    /// Takes a new valid event: remembered, counted, and published into the pipeline.
    pub(super) fn accept(&mut self, event: Event) {
        self.seen.insert(event.uuid, event.node_id);
        Counters::inc(&self.counters.peer_events_accepted);
        self.pipeline.publish(event);
    }

    /// Counts an invalid event.
    pub(super) fn rejected(&self) {
        Counters::inc(&self.counters.peer_events_rejected);
    }

    /// Remembers an event we shared, so that it is not taken back from a peer.
    pub(super) fn remember(&mut self, uuid: Uuid) {
        self.seen.insert(uuid, self.node_id);
    }

    /// Whether this event's UUID is held already, and from whom: recently seen, or in the
    /// database (our own rows, or a peer's with the author its signed form names).
    fn known(&mut self, event: &Event) -> Known {
        let ours = event.node_id == self.node_id;
        if let Some(author) = self.seen.get(&event.uuid) {
            return if author == event.node_id {
                Known::Same
            } else {
                Known::OtherAuthor
            };
        }
        let Origin::Peer(author) = &event.origin else {
            return Known::Same;
        };
        let id = event.uuid.hyphenated().to_string();
        let held: Option<(bool, Option<String>)> = self
            .store
            .with(|c| {
                c.prepare_cached(
                    "SELECT h.received_from_peer IS NULL, s.author FROM honey h
                     LEFT JOIN sentrypeer_signed_events s ON s.event_uuid = h.event_uuid
                     WHERE h.event_uuid = ?1 LIMIT 1",
                )?
                .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
            })
            .unwrap_or(None);
        let same = match held {
            None => return if ours { Known::Same } else { Known::No },
            // Captured here: ours, and nobody else's to sign.
            Some((true, _)) => ours,
            Some((false, Some(stored))) => stored == *author,
            // A peer's event kept from before events were signed: no author to compare.
            Some((false, None)) => true,
        };
        if same {
            self.seen.insert(event.uuid, event.node_id);
            Known::Same
        } else {
            Known::OtherAuthor
        }
    }
}

/// What a node holds of an event's UUID.
enum Known {
    No,
    /// The same event, from the same author (or our own).
    Same,
    /// An event of that UUID written by someone else.
    OtherAuthor,
}

/// Recent event UUIDs and the node id of their author, oldest forgotten first.
#[derive(Default)]
struct Seen {
    authors: HashMap<Uuid, Uuid>,
    order: VecDeque<Uuid>,
}

impl Seen {
    fn get(&self, id: &Uuid) -> Option<Uuid> {
        self.authors.get(id).copied()
    }

    fn insert(&mut self, id: Uuid, author: Uuid) {
        if self.authors.insert(id, author).is_none() {
            self.order.push_back(id);
            if self.order.len() > SEEN_CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.authors.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_forgets_the_oldest_past_its_capacity() {
        let mut s = Seen::default();
        let (first, author) = (Uuid::new_v4(), Uuid::new_v4());
        s.insert(first, author);
        assert_eq!(s.get(&first), Some(author));
        for _ in 0..SEEN_CAPACITY {
            s.insert(Uuid::new_v4(), author);
        }
        assert_eq!(s.get(&first), None);
        assert_eq!(s.authors.len(), SEEN_CAPACITY);
    }
}
