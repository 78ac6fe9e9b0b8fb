//! The one door peers' events come in by, whether gossiped in real time or fetched in a
//! catch-up page: decoding and validation, de-duplication (recently seen UUIDs, then the
//! database), the intake counters, and publishing into the pipeline as `Origin::Peer`.
//!
//! Owns the recently-seen set. Must not depend on the swarm or on the node's jobs: gossip and
//! catch-up sessions call it; it calls neither.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

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
    node_id: Uuid,
    policy: Policy,
    pipeline: Pipeline,
    counters: Arc<Counters>,
    store: Arc<ReadPool>,
    seen: Seen,
}

impl Arrivals {
    pub(super) fn new(
        node_id: Uuid,
        policy: Policy,
        pipeline: Pipeline,
        counters: Arc<Counters>,
        store: Arc<ReadPool>,
    ) -> Self {
        Self {
            node_id,
            policy,
            pipeline,
            counters,
            store,
            seen: Seen::default(),
        }
    }

    /// Decodes and validates one event from a peer; `origin` is who we credit it to.
    pub(super) fn decode(
        &self,
        data: &[u8],
        now: SystemTime,
        origin: Origin,
    ) -> Result<Event, validate::Invalid> {
        validate::decode(data, now, self.policy, origin)
    }

    /// Whether a valid event is one we do not hold yet: not our own, not recently seen, not in
    /// the database.
    pub(super) fn is_new(&mut self, event: &Event) -> bool {
        event.node_id != self.node_id && !self.is_known(&event.uuid)
    }

    /// Takes a new valid event: remembered, counted, and published into the pipeline.
    pub(super) fn accept(&mut self, event: Event) {
        self.seen.insert(event.uuid);
        Counters::inc(&self.counters.peer_events_accepted);
        self.pipeline.publish(event);
    }

    /// Counts an invalid event.
    pub(super) fn rejected(&self) {
        Counters::inc(&self.counters.peer_events_rejected);
    }

    /// Remembers an event we shared, so that it is not taken back from a peer.
    pub(super) fn remember(&mut self, uuid: Uuid) {
        self.seen.insert(uuid);
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

#[cfg(test)]
mod tests {
    use super::*;

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
