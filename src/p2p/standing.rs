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
//! real-time event is credited to its signer (the key its signature verifies with), whichever peer handed
//! it over. A caught-up event is not signed by its writer, so it is credited to the peers whose
//! own signed events carry its node id. Nobody's claim can take credit away from another peer.
//! A modified node can always make up events that no one can tell from real probes; what this
//! stops is a stock node that records nothing keeping its standing by relaying.
//!
//! **Grace is shared, not per identity.** Identities cost nothing to make, so a grace period
//! for each would let one host be served for ever by reconnecting under new keys. Instead,
//! identities never met before draw on one token bucket of grace admissions:
//! [`GRACE_ADMISSIONS_BURST`] at once, refilled at [`GRACE_ADMISSIONS_PER_HOUR`]. An identity
//! met while the bucket is empty starts as a listener (it still earns standing by writing
//! events that reach us, from itself or through other peers), and is offered grace again when it
//! next connects. The grace period runs from the admission, so peers in grace at once number at
//! most the burst plus the hourly rate times the grace period. Trusted peers take no token.
//!
//! **Standing survives restarts.** Times are kept as wall-clock milliseconds and every peer
//! that was admitted to grace or has written events is saved (`store::peer_standing`) and
//! restored at start: a restart gives nobody a fresh grace period, and the grace bucket starts
//! with what the admissions of the last [`GRACE_MEMORY`] left of it.
//!
//! Also the per-peer limits on what a peer may send us in real time and take from us (or we
//! from it) by catch-up.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::store::peer_standing::SavedPeer;

/// How recently a peer must have brought us a new valid event to keep being served. Honeypots
/// on the internet see probes every few minutes; a day covers quiet ones and short outages.
pub const CONTRIBUTION_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Grace periods handed out at once to identities never met before: a node's first
/// connections (bootstrap peers, peer exchange, mDNS neighbours) and a few more.
pub const GRACE_ADMISSIONS_BURST: f64 = 32.0;
/// Grace periods handed out per hour once the burst is spent: more than honest nodes join a
/// network in an hour, far fewer than a host minting identities would like.
pub const GRACE_ADMISSIONS_PER_HOUR: f64 = 16.0;
/// How far back saved admissions count against the bucket at start: the time it takes to
/// refill from empty.
pub const GRACE_MEMORY: Duration =
    Duration::from_secs((GRACE_ADMISSIONS_BURST / GRACE_ADMISSIONS_PER_HOUR * 3600.0) as u64);

/// Application scores handed to gossipsub (weight 1). Gossipsub's thresholds: below 0 a peer
/// leaves the mesh, below -10 gets no gossip, below -50 gets none of our own messages, below -80
/// is ignored entirely. A listener sits at -60: served nothing, but still heard, so it can earn
/// its way back by contributing.
pub const APP_SCORE_TRUSTED: f64 = 50.0;
pub const APP_SCORE_CONTRIBUTOR: f64 = 10.0;
pub const APP_SCORE_NEW: f64 = 0.0;
pub const APP_SCORE_LISTENER: f64 = -60.0;

/// Milliseconds since the Unix epoch: how the ledger keeps time, so that it means the same
/// after a restart.
pub type Millis = i64;

/// What a peer has earned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Past its grace period (or given none) without contributing: not served.
    Listener,
    /// In its grace period and not yet contributing.
    New,
    /// Wrote a valid event new to us within the contribution window.
    Contributor,
    /// Listed in `--p2p-trusted`: always served.
    Trusted,
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
        Self::with_tokens(rate, burst, burst, now)
    }

    /// A bucket holding `tokens` now (at most `burst`).
    pub fn with_tokens(rate: f64, burst: f64, tokens: f64, now: Instant) -> Self {
        Self {
            tokens: tokens.min(burst),
            last: now,
            rate,
            burst,
        }
    }

    /// `per_hour` an hour, a whole hour's worth saved at most.
    pub fn hourly(per_hour: f64, now: Instant) -> Self {
        Self::new(per_hour / 3600.0, per_hour, now)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes `n` tokens if there are that many.
    pub fn take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// The tokens there are now (negative while in debt).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Takes `n` tokens whether or not there are that many, going into debt down to one burst
    /// below zero: for what is only known once it has happened (a page's size).
    pub fn charge(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - n).max(-self.burst);
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

/// An hour's catch-up between this node and one peer (or a group of peers).
#[derive(Debug, Clone, Copy)]
pub struct CatchUpLimits {
    /// Events carried in pages, valid, duplicate or not.
    pub events_per_hour: f64,
    /// Their encoded size.
    pub bytes_per_hour: f64,
    /// Sessions begun (a session is one run of pages).
    pub sessions_per_hour: f64,
}

/// What one peer may take from us by catch-up in an hour: a day of a busy network (events
/// arrive at a few per second network-wide) in one go, and a handful of reconnections. A
/// returning node that was away for longer takes what it missed over a few hours.
pub const CATCH_UP_SERVED_LIMITS: CatchUpLimits = CatchUpLimits {
    events_per_hour: 100_000.0,
    bytes_per_hour: 128.0 * 1024.0 * 1024.0,
    sessions_per_hour: 6.0,
};

/// What we take from one peer by catch-up in an hour: what it would serve us.
pub const CATCH_UP_ASKED_LIMITS: CatchUpLimits = CATCH_UP_SERVED_LIMITS;

/// What all peers without standing (new ones, in their grace period) may bring us by catch-up
/// in an hour, together: identities are free, so this is what bounds how fast a host minting
/// them can grow our database this way, whatever the number of identities. Contributors and
/// trusted peers are not charged to it.
pub const CATCH_UP_NEW_PEERS_LIMITS: CatchUpLimits = CatchUpLimits {
    events_per_hour: 10_000.0,
    bytes_per_hour: 16.0 * 1024.0 * 1024.0,
    sessions_per_hour: 60.0,
};

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

/// Hourly buckets applying one [`CatchUpLimits`]: sessions are taken as they begin; a page may
/// ask for as many events as are left, and what it carried is charged once it has arrived (so
/// a budget is overrun by one page's bytes at most).
#[derive(Debug, Clone)]
pub struct CatchUpBudget {
    events: Bucket,
    bytes: Bucket,
    sessions: Bucket,
    last_page: Option<Instant>,
}

impl CatchUpBudget {
    pub fn new(l: CatchUpLimits, now: Instant) -> Self {
        Self {
            events: Bucket::hourly(l.events_per_hour, now),
            bytes: Bucket::hourly(l.bytes_per_hour, now),
            sessions: Bucket::hourly(l.sessions_per_hour, now),
            last_page: None,
        }
    }

    /// Begins a session if one is left this hour.
    pub fn open_session(&mut self, now: Instant) -> bool {
        self.sessions.take(1.0, now)
    }

    /// Whether a session could begin now (taking nothing).
    pub fn can_open(&mut self, now: Instant) -> bool {
        self.sessions.available(now) >= 1.0
    }

    /// For a page request: whether it continues a session (a page within `gap` of the last
    /// one) or may begin one.
    pub fn session_for_page(&mut self, now: Instant, gap: Duration) -> bool {
        let continues = self
            .last_page
            .is_some_and(|t| now.saturating_duration_since(t) < gap);
        if continues || self.open_session(now) {
            self.last_page = Some(now);
            true
        } else {
            false
        }
    }

    /// How many events the next page may carry, at most `max`: 0 once the events or bytes of
    /// the hour are spent.
    pub fn allowance(&mut self, max: u32, now: Instant) -> u32 {
        if self.bytes.available(now) < 1.0 {
            return 0;
        }
        let events = self.events.available(now).floor();
        if events < 1.0 {
            0
        } else {
            (events as u32).min(max)
        }
    }

    /// Charges a page that carried `events` events in `bytes` bytes.
    pub fn charge(&mut self, events: usize, bytes: usize, now: Instant) {
        self.events.charge(events as f64, now);
        self.bytes.charge(bytes as f64, now);
    }
}

/// What we know of one peer.
#[derive(Debug, Clone)]
pub struct PeerRecord {
    /// When we first met it (kept across restarts).
    pub first_seen: Millis,
    /// When it was last connected (or first met).
    pub last_seen: Millis,
    /// When its grace period began; `None` if it was given none (see the module's rule).
    pub grace_from: Option<Millis>,
    /// When it last wrote an event new to us.
    pub last_contribution: Option<Millis>,
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
    /// Catch-up pages it may ask of us per second.
    pub serve: Bucket,
    /// What it may take from us by catch-up per hour.
    pub served: CatchUpBudget,
    /// What we may take from it by catch-up per hour.
    pub asked: CatchUpBudget,
}

impl PeerRecord {
    fn new(first_seen: Millis, now: Instant) -> Self {
        Self {
            first_seen,
            last_seen: first_seen,
            grace_from: None,
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
            served: CatchUpBudget::new(CATCH_UP_SERVED_LIMITS, now),
            asked: CatchUpBudget::new(CATCH_UP_ASKED_LIMITS, now),
        }
    }

    /// Whether it is worth a row in the database: it was given grace (so that a restart does
    /// not give it another) or it has written events.
    fn worth_saving(&self) -> bool {
        self.grace_from.is_some() || self.events_authored > 0
    }
}

/// What became of a peer's connection, for grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Met before, trusted, or contributing: nothing to decide.
    Known,
    /// Given a grace period now.
    Admitted,
    /// Given none: the grace bucket is empty (see the module's rule).
    Refused,
}

/// Converts the monotonic clock the node runs on into wall-clock milliseconds, fixed at one
/// moment so that durations between the two agree exactly.
#[derive(Debug, Clone, Copy)]
struct Clock {
    at: Instant,
    wall: Millis,
}

impl Clock {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            wall: wall_ms(SystemTime::now()),
        }
    }

    fn ms(&self, t: Instant) -> Millis {
        let nanos = if t >= self.at {
            t.duration_since(self.at).as_nanos() as i128
        } else {
            -(self.at.duration_since(t).as_nanos() as i128)
        };
        self.wall + nanos.div_euclid(1_000_000) as Millis
    }
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms(t: SystemTime) -> Millis {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as Millis)
}

fn millis(d: Duration) -> Millis {
    d.as_millis().min(i64::MAX as u128) as Millis
}

/// Every peer we remember (at most [`MAX_REMEMBERED_PEERS`]), and the rules.
#[derive(Debug)]
pub struct Ledger<K> {
    peers: HashMap<K, PeerRecord>,
    trusted: Vec<K>,
    grace: Duration,
    /// Grace periods for identities never met before (see the module's rule).
    admissions: Bucket,
    clock: Clock,
    /// Peers whose saved row is out of date (a subset of `peers`).
    unsaved: HashSet<K>,
}

/// Peers remembered at most, in memory and in the database; beyond this the oldest
/// disconnected ones that never wrote an event are forgotten first, so that a stream of
/// throwaway identities cannot grow memory without bound or push out the peers that matter.
pub const MAX_REMEMBERED_PEERS: usize = 10_000;

impl<K: Hash + Eq + Clone> Ledger<K> {
    pub fn new(trusted: Vec<K>, grace: Duration) -> Self {
        let clock = Clock::now();
        Self {
            peers: HashMap::new(),
            trusted,
            grace,
            admissions: Bucket::new(
                GRACE_ADMISSIONS_PER_HOUR / 3600.0,
                GRACE_ADMISSIONS_BURST,
                clock.at,
            ),
            clock,
            unsaved: HashSet::new(),
        }
    }

    /// Takes back what was saved (see [`Ledger::unsaved`]); rows whose peer id does not parse
    /// are skipped. The grace bucket is charged with the admissions of the last
    /// [`GRACE_MEMORY`].
    pub fn restore(&mut self, rows: Vec<SavedPeer>, parse: impl Fn(&str) -> Option<K>) {
        let now = self.clock.at;
        let now_ms = self.clock.wall;
        let mut recent_admissions = 0.0;
        for row in rows.into_iter().take(MAX_REMEMBERED_PEERS) {
            let Some(peer) = parse(&row.peer_id) else {
                continue;
            };
            if row
                .grace_from_ms
                .is_some_and(|g| now_ms.saturating_sub(g) < millis(GRACE_MEMORY))
            {
                recent_admissions += 1.0;
            }
            let mut r = PeerRecord::new(row.first_seen_ms, now);
            r.last_seen = row.last_seen_ms;
            r.grace_from = row.grace_from_ms;
            r.events_authored = row.events_authored;
            r.last_contribution = row.last_authored_ms;
            r.node_id = row.node_id.as_deref().and_then(|s| Uuid::parse_str(s).ok());
            self.peers.insert(peer, r);
        }
        self.admissions = Bucket::with_tokens(
            GRACE_ADMISSIONS_PER_HOUR / 3600.0,
            GRACE_ADMISSIONS_BURST,
            (GRACE_ADMISSIONS_BURST - recent_admissions).max(0.0),
            now,
        );
    }

    /// The rows to write for peers whose standing changed since the last call.
    pub fn unsaved(&mut self, id: impl Fn(&K) -> String) -> Vec<SavedPeer> {
        let mut rows = Vec::new();
        for k in self.unsaved.drain() {
            let Some(r) = self.peers.get(&k) else {
                continue;
            };
            if !r.worth_saving() {
                continue;
            }
            rows.push(SavedPeer {
                peer_id: id(&k),
                first_seen_ms: r.first_seen,
                last_seen_ms: r.last_seen,
                grace_from_ms: r.grace_from,
                events_authored: r.events_authored,
                last_authored_ms: r.last_contribution,
                node_id: r.node_id.map(|u| u.hyphenated().to_string()),
            });
        }
        rows
    }

    /// The record of `peer`, created on first sight, when an identity never met before draws
    /// on the grace bucket.
    pub fn record(&mut self, peer: &K, now: Instant) -> &mut PeerRecord {
        if !self.peers.contains_key(peer) {
            if self.peers.len() >= MAX_REMEMBERED_PEERS {
                self.forget_one();
            }
            let ms = self.clock.ms(now);
            let mut r = PeerRecord::new(ms, now);
            if !self.trusted.contains(peer) && self.admissions.take(1.0, now) {
                r.grace_from = Some(ms);
            }
            self.unsaved.insert(peer.clone());
            self.peers.insert(peer.clone(), r);
        }
        self.peers.get_mut(peer).expect("inserted above")
    }

    /// A peer's first connection opened. An identity met for the first time draws on the
    /// grace bucket; one that was given no grace before tries again (unless it has written
    /// events meanwhile).
    pub fn connected(&mut self, peer: &K, now: Instant) -> Admission {
        let known = self.peers.contains_key(peer);
        let trusted = self.trusted.contains(peer);
        let ms = self.clock.ms(now);
        self.record(peer, now);
        self.unsaved.insert(peer.clone());
        let r = self.peers.get_mut(peer).expect("recorded above");
        r.connected = true;
        r.last_seen = ms;
        if trusted {
            return Admission::Known;
        }
        if !known {
            return if r.grace_from.is_some() {
                Admission::Admitted
            } else {
                Admission::Refused
            };
        }
        if r.grace_from.is_some() || r.last_contribution.is_some() {
            return Admission::Known;
        }
        if self.admissions.take(1.0, now) {
            r.grace_from = Some(ms);
            Admission::Admitted
        } else {
            Admission::Refused
        }
    }

    /// A peer's last connection closed.
    pub fn disconnected(&mut self, peer: &K, now: Instant) {
        let ms = self.clock.ms(now);
        if let Some(r) = self.peers.get_mut(peer) {
            r.connected = false;
            r.last_seen = ms;
            self.unsaved.insert(peer.clone());
        }
    }

    pub fn get(&self, peer: &K) -> Option<&PeerRecord> {
        self.peers.get(peer)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &PeerRecord)> {
        self.peers.iter()
    }

    /// How long ago `peer` was first met.
    pub fn known_for(&self, peer: &K, now: Instant) -> Option<Duration> {
        let r = self.peers.get(peer)?;
        Some(self.since(r.first_seen, now))
    }

    /// How long ago `peer` last wrote an event new to us.
    pub fn since_contribution(&self, peer: &K, now: Instant) -> Option<Duration> {
        let t = self.peers.get(peer)?.last_contribution?;
        Some(self.since(t, now))
    }

    fn since(&self, t: Millis, now: Instant) -> Duration {
        Duration::from_millis(self.clock.ms(now).saturating_sub(t).max(0) as u64)
    }

    /// Forgets one disconnected peer: one that never wrote an event before one that did, the
    /// least recently active first.
    fn forget_one(&mut self) {
        let oldest = self
            .peers
            .iter()
            .filter(|(_, r)| !r.connected)
            .min_by_key(|(_, r)| {
                (
                    r.last_contribution.is_some(),
                    r.last_contribution.unwrap_or(r.last_seen),
                )
            })
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.peers.remove(&k);
            self.unsaved.remove(&k);
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
        let ms = self.clock.ms(now);
        let r = self.peers.get_mut(peer)?;
        r.events_authored += n;
        if n > 0 {
            r.last_contribution = Some(ms);
            self.unsaved.insert(peer.clone());
        }
        Some(r)
    }

    /// Notes the node id `peer`'s own signed event carried (the latest wins; peers not met
    /// are not remembered).
    pub fn signs_as(&mut self, peer: &K, node_id: Uuid) {
        if let Some(r) = self.peers.get_mut(peer) {
            if r.node_id != Some(node_id) {
                r.node_id = Some(node_id);
                self.unsaved.insert(peer.clone());
            }
        }
    }

    /// Records a catch-up page's new events served by `peer`; `ids` are their node ids. Each
    /// is credited to the peers whose signed events carry that node id.
    pub fn served_page(&mut self, peer: &K, ids: &[Uuid], now: Instant) {
        self.delivered(peer, ids.len() as u64, now);
        let ms = self.clock.ms(now);
        let mut written: HashMap<Uuid, u64> = HashMap::new();
        for id in ids {
            *written.entry(*id).or_default() += 1;
        }
        for (k, r) in self.peers.iter_mut() {
            let Some(n) = r.node_id.and_then(|id| written.get(&id)) else {
                continue;
            };
            r.events_authored += n;
            r.last_contribution = Some(ms);
            self.unsaved.insert(k.clone());
        }
    }

    /// What `peer` has earned at `now`. A peer never met has earned nothing.
    pub fn standing(&self, peer: &K, now: Instant) -> Standing {
        if self.trusted.contains(peer) {
            return Standing::Trusted;
        }
        let Some(r) = self.peers.get(peer) else {
            return Standing::Listener;
        };
        standing_of(r, self.clock.ms(now), self.grace)
    }
}

/// The rule, on one record, at `now` (wall-clock milliseconds).
pub fn standing_of(r: &PeerRecord, now: Millis, grace: Duration) -> Standing {
    let recent = r
        .last_contribution
        .is_some_and(|t| now.saturating_sub(t) <= millis(CONTRIBUTION_WINDOW));
    if recent {
        Standing::Contributor
    } else if r
        .grace_from
        .is_some_and(|g| now.saturating_sub(g) < millis(grace))
    {
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

    #[test]
    fn new_identities_share_one_bucket_of_grace() {
        let t0 = Instant::now();
        let mut l: Ledger<u32> = Ledger::new(vec![1_000_000], GRACE);
        let burst = GRACE_ADMISSIONS_BURST as u32;
        for i in 0..burst {
            assert_eq!(l.connected(&i, t0), Admission::Admitted, "{i}");
            assert_eq!(l.standing(&i, t0), Standing::New);
        }
        assert_eq!(l.connected(&burst, t0), Admission::Refused);
        assert_eq!(l.standing(&burst, t0), Standing::Listener, "no grace left");
        assert_eq!(l.connected(&1_000_000, t0), Admission::Known, "trusted");
        assert_eq!(l.standing(&1_000_000, t0), Standing::Trusted);
        // Reconnecting under a known identity takes nothing more.
        l.disconnected(&0, t0);
        assert_eq!(l.connected(&0, t0), Admission::Known);
        // An hour later the bucket has refilled by its hourly rate: the refused identity is
        // offered grace when it next connects, and its grace runs from then.
        let hour = t0 + Duration::from_secs(3601);
        l.disconnected(&burst, hour);
        assert_eq!(l.connected(&burst, hour), Admission::Admitted);
        assert_eq!(l.standing(&burst, hour), Standing::New);
        let fresh = (burst + 1..burst + 100)
            .filter(|i| l.connected(i, hour) == Admission::Admitted)
            .count();
        assert_eq!(fresh as f64, GRACE_ADMISSIONS_PER_HOUR - 1.0);
    }

    #[test]
    fn standing_and_spent_grace_survive_a_restart() {
        let t0 = Instant::now();
        let mut l: Ledger<String> = Ledger::new(vec![], GRACE);
        for p in ["contributor", "listener", "graced"] {
            l.connected(&p.to_string(), t0);
        }
        l.authored(&"contributor".to_string(), 3, t0);
        l.signs_as(&"contributor".to_string(), Uuid::from_u128(7));
        for i in 0..100 {
            l.connected(&format!("throwaway-{i}"), t0);
        }
        let rows = l.unsaved(|k| k.clone());
        // Only identities given grace (the burst) are worth a row; the rest are nobody.
        assert_eq!(rows.len(), GRACE_ADMISSIONS_BURST as usize);
        assert!(
            l.unsaved(|k| k.clone()).is_empty(),
            "saved rows are not saved again"
        );

        // The same rows, read back by a node restarted after the grace period: nobody is new
        // again, the contributor still is one, and the bucket remembers the admissions.
        let mut rows = rows;
        let shift = millis(GRACE) + 1;
        for r in &mut rows {
            r.first_seen_ms -= shift;
            r.last_seen_ms -= shift;
            r.grace_from_ms = r.grace_from_ms.map(|g| g - shift);
        }
        let mut after: Ledger<String> = Ledger::new(vec![], GRACE);
        after.restore(rows, |s| Some(s.to_string()));
        let now = Instant::now();
        let (c, g) = ("contributor".to_string(), "graced".to_string());
        assert_eq!(after.standing(&c, now), Standing::Contributor);
        assert_eq!(after.get(&c).unwrap().events_authored, 3);
        assert_eq!(after.get(&c).unwrap().node_id, Some(Uuid::from_u128(7)));
        assert_eq!(
            after.standing(&g, now),
            Standing::Listener,
            "no second grace"
        );
        assert_eq!(after.connected(&g, now), Admission::Known);
        assert_eq!(after.standing(&g, now), Standing::Listener);
        assert!(after.known_for(&g, now).unwrap() > GRACE);
        assert_eq!(
            after.connected(&"newcomer".to_string(), now),
            Admission::Refused,
            "the admissions of the last two hours still count"
        );
    }

    #[test]
    fn a_catch_up_budget_counts_sessions_events_and_bytes_per_hour() {
        let t0 = Instant::now();
        let limits = CatchUpLimits {
            events_per_hour: 600.0,
            bytes_per_hour: 10_000.0,
            sessions_per_hour: 2.0,
        };
        let mut b = CatchUpBudget::new(limits, t0);
        assert_eq!(b.allowance(256, t0), 256);
        b.charge(500, 1_000, t0);
        assert_eq!(b.allowance(256, t0), 100, "what is left of the hour");
        b.charge(100, 14_000, t0);
        assert_eq!(b.allowance(256, t0), 0, "bytes overrun by the last page");
        // Six minutes refill a tenth of the hour's events, but the bytes are still in debt.
        let later = t0 + Duration::from_secs(360);
        assert_eq!(b.allowance(256, later), 0);
        assert_eq!(b.allowance(256, t0 + Duration::from_secs(3600)), 256);

        let gap = Duration::from_secs(60);
        let mut b = CatchUpBudget::new(limits, t0);
        assert!(b.session_for_page(t0, gap));
        assert!(
            b.session_for_page(t0 + Duration::from_secs(30), gap),
            "same session"
        );
        assert!(
            b.session_for_page(t0 + Duration::from_secs(200), gap),
            "a second"
        );
        assert!(
            !b.session_for_page(t0 + Duration::from_secs(400), gap),
            "none left"
        );
        assert!(
            b.open_session(t0 + Duration::from_secs(1800)),
            "half an hour: one more"
        );
    }

    #[test]
    fn throwaway_identities_are_forgotten_before_peers_that_wrote_events() {
        let t0 = Instant::now();
        let mut l: Ledger<u32> = Ledger::new(vec![], GRACE);
        l.connected(&0, t0);
        l.authored(&0, 1, t0);
        l.disconnected(&0, t0);
        for i in 1..MAX_REMEMBERED_PEERS as u32 {
            let at = t0 + Duration::from_millis(u64::from(i));
            l.connected(&i, at);
            l.disconnected(&i, at);
        }
        l.connected(&999_999, t0 + GRACE);
        assert!(l.get(&0).is_some(), "the contributor is kept");
        assert!(l.get(&1).is_none(), "the oldest throwaway goes");
        assert_eq!(l.iter().count(), MAX_REMEMBERED_PEERS);
    }
}
