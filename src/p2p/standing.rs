//! Tit-for-tat: what each peer has given and taken, and what that earns it. Pure bookkeeping
//! keyed by any peer id type, with time passed in, so the rules are unit-tested without a network.
//!
//! A peer is served (real-time events and catch-up) while it is trusted, new (inside its grace
//! period), or has written a valid event new to us within [`CONTRIBUTION_WINDOW`]. Anyone else
//! is a listener: gossipsub scores it out of the mesh (through the application score) and
//! catch-up refuses it. A listener that starts contributing is served again: its messages are
//! still read, because its score stays above the graylist.
//!
//! Written, not relayed: every mesh peer forwards what it receives, so a node that records
//! nothing but relays quickly would otherwise earn its standing with other nodes' data. A
//! real-time event is credited to its signer (gossipsub's strict signing), whichever peer handed
//! it over. A caught-up event is not signed by its writer, so it is credited to the peers whose
//! own signed events carry its node id. Nobody's claim can take credit away from another peer.
//! A modified node can always make up events that no one can tell from real probes; what this
//! stops is a stock node that records nothing keeping its standing by relaying.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How recently a peer must have brought us a new valid event to keep being served. Honeypots
/// on the internet see probes every few minutes; a day covers quiet ones and short outages.
pub const CONTRIBUTION_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Application scores handed to gossipsub (weight 1). Gossipsub's thresholds: below 0 a peer
/// leaves the mesh, below -10 gets no gossip, below -50 gets none of our own messages, below -80
/// is ignored entirely. A listener sits at -60: served nothing, but still heard, so it can earn
/// its way back by contributing.
pub const APP_SCORE_TRUSTED: f64 = 50.0;
pub const APP_SCORE_CONTRIBUTOR: f64 = 10.0;
pub const APP_SCORE_NEW: f64 = 0.0;
pub const APP_SCORE_LISTENER: f64 = -60.0;

/// What a peer has earned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Listed in `--p2p-trusted`: always served.
    Trusted,
    /// Met less than the grace period ago and not yet contributing.
    New,
    /// Wrote a valid event new to us within the contribution window.
    Contributor,
    /// Past its grace period without contributing: not served.
    Listener,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Trusted => "trusted",
            Standing::New => "new",
            Standing::Contributor => "contributor",
            Standing::Listener => "listener",
        }
    }

    /// The gossipsub application score for this standing.
    pub fn app_score(self) -> f64 {
        match self {
            Standing::Trusted => APP_SCORE_TRUSTED,
            Standing::Contributor => APP_SCORE_CONTRIBUTOR,
            Standing::New => APP_SCORE_NEW,
            Standing::Listener => APP_SCORE_LISTENER,
        }
    }

    /// Whether this peer is served our events and catch-up.
    pub fn is_served(self) -> bool {
        self != Standing::Listener
    }
}

/// A token bucket: `rate` per second, up to `burst` saved.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
            rate,
            burst,
        }
    }

    /// Takes `n` tokens if there are that many.
    pub fn take(&mut self, n: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Limits on what one peer may send us, by events and by bytes per second.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    pub events_per_sec: f64,
    pub events_burst: f64,
    pub bytes_per_sec: f64,
    pub bytes_burst: f64,
}

/// Per peer (as the one who handed us an event): a busy forwarder carries the whole network's
/// traffic, so this is generous; it stops a peer that floods.
pub const PER_PEER_LIMITS: RateLimits = RateLimits {
    events_per_sec: 2_000.0,
    events_burst: 20_000.0,
    bytes_per_sec: 8.0 * 1024.0 * 1024.0,
    bytes_burst: 64.0 * 1024.0 * 1024.0,
};

/// Per author (the signer): one honeypot's share. Our own publishing is limited below this
/// (see `OUTBOUND_LIMITS`), so an honest node never meets it.
pub const PER_AUTHOR_LIMITS: RateLimits = RateLimits {
    events_per_sec: 200.0,
    events_burst: 10_000.0,
    bytes_per_sec: 1024.0 * 1024.0,
    bytes_burst: 32.0 * 1024.0 * 1024.0,
};

/// What this node publishes at most: a flood of probes against us is recorded here in full,
/// but shared at this pace (peers can still fetch the rest with catch-up).
pub const OUTBOUND_LIMITS: RateLimits = RateLimits {
    events_per_sec: 100.0,
    events_burst: 5_000.0,
    bytes_per_sec: 512.0 * 1024.0,
    bytes_burst: 16.0 * 1024.0 * 1024.0,
};

/// Catch-up pages served to one peer per second, and saved up: a returning node fetches a
/// week in a few seconds to minutes; one asking faster is refused until it slows down.
pub const SERVE_PAGES_PER_SEC: f64 = 20.0;
pub const SERVE_PAGES_BURST: f64 = 200.0;

/// A pair of buckets applying one [`RateLimits`].
#[derive(Debug, Clone)]
pub struct Limiter {
    events: Bucket,
    bytes: Bucket,
}

impl Limiter {
    pub fn new(l: RateLimits, now: Instant) -> Self {
        Self {
            events: Bucket::new(l.events_per_sec, l.events_burst, now),
            bytes: Bucket::new(l.bytes_per_sec, l.bytes_burst, now),
        }
    }

    /// When it was last asked.
    pub fn last_used(&self) -> Instant {
        self.events.last.max(self.bytes.last)
    }

    /// Admits one event of `len` bytes, or refuses it (taking nothing from the event bucket).
    pub fn admit(&mut self, len: usize, now: Instant) -> bool {
        self.bytes.take(len as f64, now) && self.events.take(1.0, now)
    }
}

/// What we know of one peer.
#[derive(Debug, Clone)]
pub struct PeerRecord {
    pub first_seen: Instant,
    /// When it last wrote an event new to us.
    pub last_contribution: Option<Instant>,
    /// New valid events it handed us, its own or relayed (real-time and catch-up).
    pub events_received: u64,
    /// New valid events it wrote, whoever handed them to us.
    pub events_authored: u64,
    /// The node id its latest signed event carried, by which its events are recognised in
    /// catch-up pages.
    pub node_id: Option<Uuid>,
    /// Events we offered it (our own published while it was served, forwarded ones, catch-up).
    pub events_sent: u64,
    /// Events from it that failed validation.
    pub events_rejected: u64,
    /// Events from it dropped by the rate limits.
    pub events_limited: u64,
    pub connected: bool,
    /// What it may send us in real time.
    pub limiter: Limiter,
    /// Catch-up pages it may ask of us.
    pub serve: Bucket,
}

/// Every peer we have met this run, and the rules.
#[derive(Debug)]
pub struct Ledger<K> {
    peers: HashMap<K, PeerRecord>,
    trusted: Vec<K>,
    grace: Duration,
}

/// Peers remembered at most; the oldest disconnected ones are forgotten beyond this, so that
/// a stream of throwaway identities cannot grow memory without bound.
pub const MAX_REMEMBERED_PEERS: usize = 10_000;

impl<K: Hash + Eq + Clone> Ledger<K> {
    pub fn new(trusted: Vec<K>, grace: Duration) -> Self {
        Self {
            peers: HashMap::new(),
            trusted,
            grace,
        }
    }

    /// The record of `peer`, created on first sight.
    pub fn record(&mut self, peer: &K, now: Instant) -> &mut PeerRecord {
        if !self.peers.contains_key(peer) && self.peers.len() >= MAX_REMEMBERED_PEERS {
            self.forget_one();
        }
        self.peers
            .entry(peer.clone())
            .or_insert_with(|| PeerRecord {
                first_seen: now,
                last_contribution: None,
                events_received: 0,
                events_authored: 0,
                node_id: None,
                events_sent: 0,
                events_rejected: 0,
                events_limited: 0,
                connected: false,
                limiter: Limiter::new(PER_PEER_LIMITS, now),
                serve: Bucket::new(SERVE_PAGES_PER_SEC, SERVE_PAGES_BURST, now),
            })
    }

    pub fn get(&self, peer: &K) -> Option<&PeerRecord> {
        self.peers.get(peer)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &PeerRecord)> {
        self.peers.iter()
    }

    fn forget_one(&mut self) {
        let oldest = self
            .peers
            .iter()
            .filter(|(_, r)| !r.connected)
            .min_by_key(|(_, r)| r.last_contribution.unwrap_or(r.first_seen))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.peers.remove(&k);
        }
    }

    /// Records `n` new valid events that `peer` handed us, its own or relayed. This earns
    /// nothing by itself: see [`Ledger::authored`].
    pub fn delivered(&mut self, peer: &K, n: u64, now: Instant) {
        self.record(peer, now).events_received += n;
    }

    /// Records `n` new valid events written by `peer`, which is what earns standing. Only a
    /// peer already met is credited (standing matters only to direct peers), so authors seen
    /// through relays take no memory. Returns its record when it was credited.
    pub fn authored(&mut self, peer: &K, n: u64, now: Instant) -> Option<&mut PeerRecord> {
        let r = self.peers.get_mut(peer)?;
        r.events_authored += n;
        if n > 0 {
            r.last_contribution = Some(now);
        }
        Some(r)
    }

    /// Notes the node id `peer`'s own signed event carried (the latest wins; peers not met
    /// are not remembered).
    pub fn signs_as(&mut self, peer: &K, node_id: Uuid) {
        if let Some(r) = self.peers.get_mut(peer) {
            r.node_id = Some(node_id);
        }
    }

    /// Records a catch-up page's new events served by `peer`; `ids` are their node ids. Each
    /// is credited to the peers whose signed events carry that node id.
    pub fn served_page(&mut self, peer: &K, ids: &[Uuid], now: Instant) {
        self.delivered(peer, ids.len() as u64, now);
        let mut written: HashMap<Uuid, u64> = HashMap::new();
        for id in ids {
            *written.entry(*id).or_default() += 1;
        }
        for r in self.peers.values_mut() {
            let Some(n) = r.node_id.and_then(|id| written.get(&id)) else {
                continue;
            };
            r.events_authored += n;
            r.last_contribution = Some(now);
        }
    }

    /// What `peer` has earned at `now`.
    pub fn standing(&self, peer: &K, now: Instant) -> Standing {
        if self.trusted.contains(peer) {
            return Standing::Trusted;
        }
        let Some(r) = self.peers.get(peer) else {
            return Standing::New;
        };
        standing_of(r, now, self.grace)
    }
}

/// The rule, on one record.
pub fn standing_of(r: &PeerRecord, now: Instant, grace: Duration) -> Standing {
    let recent = r
        .last_contribution
        .is_some_and(|t| now.saturating_duration_since(t) <= CONTRIBUTION_WINDOW);
    if recent {
        Standing::Contributor
    } else if now.saturating_duration_since(r.first_seen) < grace {
        Standing::New
    } else {
        Standing::Listener
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    #[test]
    fn a_new_peer_is_served_during_its_grace_period_then_must_contribute() {
        let t0 = Instant::now();
        let mut l: Ledger<&str> = Ledger::new(vec![], GRACE);
        l.record(&"a", t0);
        assert_eq!(l.standing(&"a", t0), Standing::New);
        assert_eq!(
            l.standing(&"a", t0 + GRACE - Duration::from_secs(1)),
            Standing::New
        );
        assert_eq!(l.standing(&"a", t0 + GRACE), Standing::Listener);
        assert!(!Standing::Listener.is_served());
    }

    #[test]
    fn a_contributor_is_served_for_the_contribution_window() {
        let t0 = Instant::now();
        let mut l: Ledger<&str> = Ledger::new(vec![], GRACE);
        l.record(&"a", t0);
        l.authored(&"a", 1, t0 + Duration::from_secs(10));
        let later = t0 + Duration::from_secs(10) + CONTRIBUTION_WINDOW;
        assert_eq!(l.standing(&"a", later), Standing::Contributor);
        assert_eq!(
            l.standing(&"a", later + Duration::from_secs(1)),
            Standing::Listener
        );
        assert_eq!(l.get(&"a").unwrap().events_authored, 1);
    }

    #[test]
    fn a_listener_that_starts_contributing_is_served_again() {
        let t0 = Instant::now();
        let mut l: Ledger<&str> = Ledger::new(vec![], GRACE);
        l.record(&"a", t0);
        let late = t0 + GRACE * 3;
        assert_eq!(l.standing(&"a", late), Standing::Listener);
        l.authored(&"a", 0, late);
        assert_eq!(l.standing(&"a", late), Standing::Listener, "nothing new");
        l.authored(&"a", 2, late);
        assert_eq!(l.standing(&"a", late), Standing::Contributor);
    }

    #[test]
    fn relaying_other_nodes_events_earns_nothing() {
        let t0 = Instant::now();
        let mut l: Ledger<&str> = Ledger::new(vec![], GRACE);
        l.record(&"relay", t0);
        l.record(&"writer", t0);
        let late = t0 + GRACE * 2;
        // The relay hands us 100 new events written by "writer" (a direct peer) and by a
        // node we have never met.
        l.delivered(&"relay", 100, late);
        l.authored(&"writer", 60, late);
        assert!(l.authored(&"stranger", 40, late).is_none());
        assert_eq!(l.standing(&"relay", late), Standing::Listener);
        assert_eq!(l.get(&"relay").unwrap().events_received, 100);
        assert_eq!(l.standing(&"writer", late), Standing::Contributor);
        assert!(
            l.get(&"stranger").is_none(),
            "authors never met take no memory"
        );
    }

    #[test]
    fn caught_up_events_are_credited_to_the_peers_that_sign_with_their_node_id() {
        let t0 = Instant::now();
        let mut l: Ledger<&str> = Ledger::new(vec![], GRACE);
        l.record(&"server", t0);
        l.record(&"writer", t0);
        let (server_id, writer_id, unknown) =
            (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let late = t0 + GRACE * 2;
        // Before anyone's node id is known, nothing served earns anything.
        l.served_page(&"server", &[server_id, writer_id], late);
        assert_eq!(l.standing(&"server", late), Standing::Listener);
        assert_eq!(l.standing(&"writer", late), Standing::Listener);
        l.signs_as(&"server", server_id);
        l.signs_as(&"writer", writer_id);
        l.signs_as(&"stranger", unknown);
        l.served_page(&"server", &[writer_id, writer_id, unknown], late);
        assert_eq!(
            l.standing(&"server", late),
            Standing::Listener,
            "not its own"
        );
        assert_eq!(l.standing(&"writer", late), Standing::Contributor);
        assert_eq!(l.get(&"writer").unwrap().events_authored, 2);
        assert!(
            l.get(&"stranger").is_none(),
            "peers never met take no memory"
        );
        l.served_page(&"server", &[server_id], late);
        assert_eq!(l.standing(&"server", late), Standing::Contributor);
        let r = l.get(&"server").unwrap();
        assert_eq!((r.events_received, r.events_authored), (6, 1));
    }

    #[test]
    fn a_claim_on_another_peers_node_id_takes_nothing_from_it() {
        let t0 = Instant::now();
        let mut l: Ledger<&str> = Ledger::new(vec![], GRACE);
        l.record(&"honest", t0);
        l.record(&"claimer", t0);
        let h = Uuid::from_u128(10);
        l.signs_as(&"claimer", h);
        l.signs_as(&"honest", h);
        let late = t0 + GRACE * 2;
        // The honest peer's own signed events are its own whatever anyone claims.
        l.authored(&"honest", 1, late);
        assert_eq!(l.standing(&"honest", late), Standing::Contributor);
        // And its caught-up events still count for it.
        let later = late + CONTRIBUTION_WINDOW + Duration::from_secs(1);
        assert_eq!(l.standing(&"honest", later), Standing::Listener);
        l.served_page(&"claimer", &[h], later);
        assert_eq!(l.standing(&"honest", later), Standing::Contributor);
        // A node id changes with a fresh database; the latest one counts.
        let h2 = Uuid::from_u128(11);
        l.signs_as(&"honest", h2);
        assert_eq!(l.get(&"honest").unwrap().node_id, Some(h2));
    }

    #[test]
    fn trusted_peers_are_always_served() {
        let t0 = Instant::now();
        let mut l: Ledger<&str> = Ledger::new(vec!["t"], GRACE);
        l.record(&"t", t0);
        assert_eq!(l.standing(&"t", t0 + GRACE * 100), Standing::Trusted);
    }

    #[test]
    fn the_scores_sit_where_gossipsub_acts_on_them() {
        let (gossip, publish, graylist) = (-10.0, -50.0, -80.0);
        let listener = Standing::Listener.app_score();
        assert!(listener < publish && listener < gossip && listener > graylist);
        assert!(Standing::New.app_score() >= 0.0);
        assert!(Standing::Contributor.app_score() > Standing::New.app_score());
        assert!(Standing::Trusted.app_score() > Standing::Contributor.app_score());
    }

    #[test]
    fn buckets_refill_at_their_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 20.0, t0);
        assert!(b.take(20.0, t0));
        assert!(!b.take(1.0, t0));
        assert!(b.take(5.0, t0 + Duration::from_millis(500)));
        assert!(!b.take(1.0, t0 + Duration::from_millis(500)));
        assert!(b.take(20.0, t0 + Duration::from_secs(100)));
        assert!(!b.take(1.0, t0 + Duration::from_secs(100)));
    }

    #[test]
    fn a_limiter_counts_events_and_bytes() {
        let t0 = Instant::now();
        let limits = RateLimits {
            events_per_sec: 1.0,
            events_burst: 3.0,
            bytes_per_sec: 100.0,
            bytes_burst: 1000.0,
        };
        let mut l = Limiter::new(limits, t0);
        assert!(l.admit(10, t0) && l.admit(10, t0) && l.admit(10, t0));
        assert!(!l.admit(10, t0), "event burst spent");
        let mut l = Limiter::new(limits, t0);
        assert!(l.admit(900, t0));
        assert!(!l.admit(200, t0), "byte burst spent");
        assert!(l.admit(100, t0));
    }

    #[test]
    fn outbound_stays_under_what_receivers_accept_from_one_author() {
        const { assert!(OUTBOUND_LIMITS.events_per_sec < PER_AUTHOR_LIMITS.events_per_sec) };
        const { assert!(OUTBOUND_LIMITS.events_burst <= PER_AUTHOR_LIMITS.events_burst) };
        const { assert!(OUTBOUND_LIMITS.bytes_per_sec <= PER_AUTHOR_LIMITS.bytes_per_sec) };
        const { assert!(PER_AUTHOR_LIMITS.events_per_sec <= PER_PEER_LIMITS.events_per_sec) };
    }

    #[test]
    fn the_ledger_forgets_old_disconnected_peers_beyond_its_bound() {
        let t0 = Instant::now();
        let mut l: Ledger<u32> = Ledger::new(vec![], GRACE);
        for i in 0..MAX_REMEMBERED_PEERS as u32 {
            l.record(&i, t0 + Duration::from_millis(u64::from(i)))
                .connected = i == 0;
        }
        l.record(&999_999, t0 + GRACE);
        assert_eq!(l.iter().count(), MAX_REMEMBERED_PEERS);
        assert!(l.get(&0).is_some(), "connected peers are kept");
        assert!(l.get(&1).is_none(), "the oldest disconnected one goes");
    }
}
