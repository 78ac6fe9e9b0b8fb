//! Catch-up sessions, the node's side of the catch-up protocol (`catchup` has the messages and
//! the database pages): asking peers for pages of what we missed, and serving peers' page
//! requests from the database on a blocking thread. Both sides stay within budgets per peer
//! (`standing`: events, bytes and sessions per hour), so that no peer, and no crowd of fresh
//! identities, can make this node read or store without bound:
//!
//! - asked: only peers with standing (trusted, contributors, or new in their grace period),
//!   the best first (trusted, then contributors, then new peers), at most
//!   [`MAX_CONCURRENT_CATCH_UPS`] sessions at a time of which at most
//!   [`MAX_CONCURRENT_WITH_NEW_PEERS`] with a new peer; each page asks for no more events than
//!   the peer's budget has left, and new peers draw together on one more budget
//!   ([`CATCH_UP_NEW_PEERS_LIMITS`]), which bounds what identities made for the purpose can
//!   add to the database. A session whose budget runs out pauses where it was and waits;
//! - served: only peers in good standing (the node decides), within the per-second page limit
//!   and the hourly budget, at most [`MAX_PAGE_READS`] pages being read at once.
//!
//! Refusals are counted (`peer_requests_refused`, `peer_catch_up_limited`).
//!
//! Owns the sessions under way, the peers waiting for one, where each session resumes (for a
//! bounded number of peers), the catch-up requests in flight and the budget of new peers.
//! Depends on the swarm's behaviour, the standing ledger and [`Arrivals`]; must not depend on
//! gossip or discovery (the node decides who may be served).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, Swarm};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::arrivals::Arrivals;
use super::catchup::{self, Cursor, Request, Response};
use super::limits::MAX_ESTABLISHED;
use super::standing::{CATCH_UP_NEW_PEERS_LIMITS, CatchUpBudget, Ledger, Standing};
use super::swarm::{self, Behaviour};
use super::validate::{OwnAddresses, Policy, Signer};
use crate::event::format_timestamp;
use crate::metrics::Counters;
use crate::store::ReadPool;

/// How far before the last moment we were in touch catch-up starts again: covers events in
/// flight and clocks a little apart.
const CATCH_UP_OVERLAP: Duration = Duration::from_secs(10 * 60);
/// Pages fetched from one peer in one session at most (about a million events): a week of a
/// busy network, and a bound on what one dishonest peer can push into our database this way.
const MAX_PAGES_PER_SESSION: u32 = 4_000;
/// Invalid events in one page after which the session with that peer is abandoned.
const MAX_INVALID_PER_PAGE: usize = 16;
/// Catch-up sessions running at once: more would mostly fetch the same events twice.
const MAX_CONCURRENT_CATCH_UPS: usize = 2;
/// Of those, sessions with new peers (no standing yet) at once: a crowd of new identities can
/// never hold every slot, so a contributor always finds one.
const MAX_CONCURRENT_WITH_NEW_PEERS: usize = 1;
/// Peers waiting for a session at most: as many as may be connected.
const MAX_WAITING: usize = MAX_ESTABLISHED;
/// Peers whose resume cursor is remembered at most, the least recently stored forgotten first
/// (a forgotten one starts again from the startup cursor).
const MAX_RESUME_CURSORS: usize = 256;
/// Catch-up pages being read from the database for peers at once; more requests are refused
/// until one is sent. Each page is up to 2 MiB in memory and a read takes a blocking thread.
const MAX_PAGE_READS: usize = 4;
/// A page request more than this after the same peer's previous one begins a new session,
/// charged to its hourly sessions.
const SERVED_SESSION_GAP: Duration = Duration::from_secs(60);
/// Replies from the catch-up page readers waiting for the network task.
pub(super) const SERVED_QUEUE: usize = 64;

const _: () = assert!(
    SERVED_QUEUE >= MAX_PAGE_READS,
    "a reader never waits to hand over"
);

/// A page read for a peer, on its way back to the network task to be sent.
pub(super) struct Served {
    channel: ResponseChannel<Response>,
    peer: PeerId,
    response: Response,
}

/// A page asked of a peer: which session, how far it has come, how many events were asked
/// for, and whether it is charged to the new peers' budget.
struct Asked {
    peer: PeerId,
    pages: u32,
    new: u64,
    limit: u32,
    new_peer: bool,
}

/// The catch-up sessions under way, as far as who may begin next is concerned.
#[derive(Debug, Clone, Copy)]
struct Slots {
    running: usize,
    /// Of those, with new peers.
    with_new: usize,
}

impl Slots {
    /// Whether a session with a peer of this standing may begin.
    fn allow(self, standing: Standing) -> bool {
        self.running < MAX_CONCURRENT_CATCH_UPS
            && (standing > Standing::New || self.with_new < MAX_CONCURRENT_WITH_NEW_PEERS)
    }

    /// Which of the waiting peers (their standing, and whether their budgets allow a session)
    /// begins next: the best standing a slot allows, the longest waiting among equals.
    fn best(self, waiting: &[(Standing, bool)]) -> Option<usize> {
        waiting
            .iter()
            .enumerate()
            .filter(|(_, (s, budget))| *budget && s.is_served() && self.allow(*s))
            .max_by_key(|(i, (s, _))| (*s, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    }
}

/// A map that keeps its `cap` most recently inserted keys.
struct Recent<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Recent<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_some() {
            self.order.retain(|o| *o != k);
        }
        self.order.push_back(k);
        while self.map.len() > self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
        }
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        let v = self.map.remove(k)?;
        self.order.retain(|o| o != k);
        Some(v)
    }
}

pub(super) struct CatchUp {
    store: Arc<ReadPool>,
    policy: Policy,
    /// Where sessions start with peers not met earlier in this run.
    startup_cursor: Cursor,
    /// Where catch-up resumes with a peer: shortly before it disconnected, or where a session
    /// paused on a spent budget.
    resume: Recent<PeerId, Cursor>,
    requests: HashMap<OutboundRequestId, Asked>,
    /// Sessions under way: whether each is with a new peer.
    running: HashMap<PeerId, bool>,
    waiting: VecDeque<PeerId>,
    /// What new peers may bring us, together.
    new_peers: CatchUpBudget,
    /// Pages being read for peers.
    reading: usize,
    counters: Arc<Counters>,
    served_tx: mpsc::Sender<Served>,
    /// Where page readers run, so that shutdown waits for them.
    tracker: TaskTracker,
    /// What signs our own events in the pages we serve, and the addresses hidden in them.
    signing: Arc<(Signer, Arc<OwnAddresses>)>,
}

/// Where catch-up starts at startup: shortly before the newest event held.
pub(super) async fn startup_cursor(store: &Arc<ReadPool>) -> anyhow::Result<Cursor> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        store.with(|c| catchup::startup_cursor(c, SystemTime::now(), CATCH_UP_OVERLAP))
    })
    .await
    .context("reading the newest event")?
    .context("reading the newest event")
}

impl CatchUp {
    pub(super) fn new(
        store: Arc<ReadPool>,
        policy: Policy,
        startup_cursor: Cursor,
        counters: Arc<Counters>,
        served_tx: mpsc::Sender<Served>,
        tracker: TaskTracker,
        signing: (Signer, Arc<OwnAddresses>),
    ) -> Self {
        Self {
            store,
            policy,
            startup_cursor,
            resume: Recent::new(MAX_RESUME_CURSORS),
            requests: HashMap::new(),
            running: HashMap::new(),
            waiting: VecDeque::new(),
            new_peers: CatchUpBudget::new(CATCH_UP_NEW_PEERS_LIMITS, Instant::now()),
            reading: 0,
            counters,
            served_tx,
            tracker,
            signing: Arc::new(signing),
        }
    }

    /// A newly connected peer with standing is asked now, or when a slot (and its budget)
    /// allows; a listener is not asked.
    pub(super) fn queue(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ledger: &mut Ledger<PeerId>,
        peer: PeerId,
    ) {
        if self.running.contains_key(&peer) || self.waiting.contains(&peer) {
            return;
        }
        let now = Instant::now();
        let standing = ledger.standing(&peer, now);
        if !standing.is_served() {
            return;
        }
        let budget = self.has_budget(ledger, &peer, standing, now);
        if budget && self.slot_for(standing) {
            self.begin(swarm, ledger, peer, standing);
            return;
        }
        if !budget {
            Counters::inc(&self.counters.peer_catch_up_limited);
        }
        if self.waiting.len() < MAX_WAITING {
            self.waiting.push_back(peer);
        }
    }

    /// Every second: waiting peers take the free slots, as their budgets allow.
    pub(super) fn on_tick(&mut self, swarm: &mut Swarm<Behaviour>, ledger: &mut Ledger<PeerId>) {
        self.start_waiting(swarm, ledger);
    }

    /// The sessions under way.
    fn slots(&self) -> Slots {
        Slots {
            running: self.running.len(),
            with_new: self.running.values().filter(|n| **n).count(),
        }
    }

    /// Whether a session with a peer of this standing may begin now.
    fn slot_for(&self, standing: Standing) -> bool {
        self.slots().allow(standing)
    }

    /// Whether `peer`'s budget (and, for a new peer, the new peers' one) allows a session and
    /// a full page now: a session is not begun for a few events' worth of refill.
    fn has_budget(
        &mut self,
        ledger: &mut Ledger<PeerId>,
        peer: &PeerId,
        standing: Standing,
        now: Instant,
    ) -> bool {
        let page = catchup::MAX_PAGE_EVENTS as u32;
        let asked = &mut ledger.record(peer, now).asked;
        let own = asked.can_open(now) && asked.allowance(page, now) == page;
        let shared = standing != Standing::New
            || (self.new_peers.can_open(now) && self.new_peers.allowance(page, now) == page);
        own && shared
    }

    /// A peer's last connection closed: its session ends, and the next resumes shortly before
    /// now (or where a session paused on its budget).
    pub(super) fn disconnected(&mut self, peer: PeerId, ledger: &Ledger<PeerId>) {
        self.running.remove(&peer);
        self.waiting.retain(|p| *p != peer);
        if self.resume.contains(&peer) || !ledger.standing(&peer, Instant::now()).is_served() {
            return;
        }
        let since = SystemTime::now()
            .checked_sub(CATCH_UP_OVERLAP)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.resume.insert(
            peer,
            Cursor {
                since: format_timestamp(since),
                after: None,
            },
        );
    }

    fn begin(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ledger: &mut Ledger<PeerId>,
        peer: PeerId,
        standing: Standing,
    ) {
        let now = Instant::now();
        let new_peer = standing == Standing::New;
        if new_peer && !self.new_peers.open_session(now) {
            return;
        }
        if !ledger.record(&peer, now).asked.open_session(now) {
            return;
        }
        let cursor = self
            .resume
            .remove(&peer)
            .unwrap_or_else(|| self.startup_cursor.clone());
        tracing::debug!(%peer, since = %cursor.since, standing = standing.as_str(), "Catching up.");
        self.running.insert(peer, new_peer);
        self.request_page(swarm, ledger, peer, cursor, 0, 0);
    }

    /// Asks `peer` for the page at `cursor`, for as many events as the budgets allow; with
    /// none left, the session pauses there.
    fn request_page(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ledger: &mut Ledger<PeerId>,
        peer: PeerId,
        cursor: Cursor,
        pages: u32,
        new: u64,
    ) {
        let now = Instant::now();
        let standing = ledger.standing(&peer, now);
        if !standing.is_served() {
            tracing::debug!(%peer, "Ended catch-up: the peer has lost its standing.");
            self.end(swarm, ledger, peer);
            return;
        }
        let new_peer = standing == Standing::New;
        let max = catchup::MAX_PAGE_EVENTS as u32;
        let mut limit = ledger.record(&peer, now).asked.allowance(max, now);
        if new_peer {
            limit = limit.min(self.new_peers.allowance(max, now));
        }
        if limit == 0 {
            tracing::info!(%peer, pages, events = new, "Catch-up paused: the budget for this hour is spent.");
            Counters::inc(&self.counters.peer_catch_up_limited);
            self.resume.insert(peer, cursor);
            self.end(swarm, ledger, peer);
            if self.waiting.len() < MAX_WAITING {
                self.waiting.push_back(peer);
            }
            return;
        }
        self.running.insert(peer, new_peer);
        let id = swarm
            .behaviour_mut()
            .catch_up
            .send_request(&peer, Request::CatchUp { cursor, limit });
        self.requests.insert(
            id,
            Asked {
                peer,
                pages,
                new,
                limit,
                new_peer,
            },
        );
    }

    /// Whether this request is one of ours.
    pub(super) fn asked(&self, id: &OutboundRequestId) -> bool {
        self.requests.contains_key(id)
    }

    /// The answer to one of our requests (see [`CatchUp::asked`]).
    pub(super) fn on_response(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ledger: &mut Ledger<PeerId>,
        arrivals: &mut Arrivals,
        id: OutboundRequestId,
        peer: PeerId,
        response: Response,
    ) {
        match self.requests.remove(&id) {
            Some(asked) if asked.peer == peer => {
                self.on_page(swarm, ledger, arrivals, asked, response)
            }
            Some(a) => self.end(swarm, ledger, a.peer),
            None => {}
        }
    }

    /// A request that got no answer: if it was one of ours, the session ends.
    pub(super) fn on_failure(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ledger: &mut Ledger<PeerId>,
        id: OutboundRequestId,
        peer: PeerId,
        error: &dyn std::fmt::Display,
    ) {
        if self.requests.remove(&id).is_some() {
            tracing::debug!(%peer, %error, "Catch-up request failed.");
            self.end(swarm, ledger, peer);
        }
    }

    fn on_page(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ledger: &mut Ledger<PeerId>,
        arrivals: &mut Arrivals,
        asked: Asked,
        response: Response,
    ) {
        let Asked {
            peer,
            pages,
            mut new,
            limit,
            new_peer,
        } = asked;
        let Response::Events { events, next } = response else {
            if let Response::Refused { reason } = response {
                tracing::info!(%peer, %reason, "A peer refused catch-up.");
            }
            self.end(swarm, ledger, peer);
            return;
        };
        let now = Instant::now();
        // What was asked for is what is taken (and charged); the bytes all arrived.
        let taken = events.len().min(limit as usize);
        let bytes: usize = events.iter().map(String::len).sum();
        ledger.record(&peer, now).asked.charge(taken, bytes, now);
        if new_peer {
            self.new_peers.charge(taken, bytes, now);
        }
        let wall = SystemTime::now();
        let mut invalid = 0;
        let mut fresh = Vec::new();
        for json in events.iter().take(taken) {
            match arrivals.decode(json.as_bytes(), wall) {
                Err(why) => {
                    invalid += 1;
                    arrivals.rejected();
                    tracing::debug!(%peer, reason = %why, "Rejected a caught-up event.");
                }
                Ok(e) if !arrivals.is_new(&e) => {}
                Ok(e) => {
                    fresh.push(e.node_id);
                    arrivals.accept(e);
                }
            }
        }
        ledger.record(&peer, now).events_rejected += invalid as u64;
        ledger.served_page(&peer, &fresh, now);
        new += fresh.len() as u64;
        if invalid > MAX_INVALID_PER_PAGE {
            tracing::warn!(%peer, invalid, "Abandoned catch-up: the peer sends invalid events.");
            self.end(swarm, ledger, peer);
            return;
        }
        match next {
            // A page of nothing but skipped rows still moves on.
            Some(cursor) if pages + 1 < MAX_PAGES_PER_SESSION => {
                self.request_page(swarm, ledger, peer, cursor, pages + 1, new)
            }
            _ => {
                if new > 0 {
                    tracing::info!(%peer, events = new, pages = pages + 1, "Caught up with a peer.");
                }
                self.end(swarm, ledger, peer);
            }
        }
    }

    /// A session ends; waiting peers still connected take the free slots.
    fn end(&mut self, swarm: &mut Swarm<Behaviour>, ledger: &mut Ledger<PeerId>, peer: PeerId) {
        self.running.remove(&peer);
        self.start_waiting(swarm, ledger);
    }

    /// Begins sessions with waiting peers while slots are free: the best standing first, among
    /// those whose budgets allow one. Peers gone or without standing leave the queue.
    fn start_waiting(&mut self, swarm: &mut Swarm<Behaviour>, ledger: &mut Ledger<PeerId>) {
        let now = Instant::now();
        self.waiting
            .retain(|p| swarm.is_connected(p) && ledger.standing(p, now).is_served());
        while self.running.len() < MAX_CONCURRENT_CATCH_UPS && !self.waiting.is_empty() {
            let peers: Vec<PeerId> = self.waiting.iter().copied().collect();
            let mut candidates = Vec::with_capacity(peers.len());
            for p in &peers {
                let standing = ledger.standing(p, now);
                let budget = self.has_budget(ledger, p, standing, now);
                candidates.push((standing, budget));
            }
            let Some(i) = self.slots().best(&candidates) else {
                break;
            };
            if let Some(peer) = self.waiting.remove(i) {
                self.begin(swarm, ledger, peer, candidates[i].0);
            }
        }
    }

    /// Refuses a peer's request (counted).
    pub(super) fn refuse(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        channel: ResponseChannel<Response>,
        reason: &str,
    ) {
        Counters::inc(&self.counters.peer_requests_refused);
        let reason = reason.to_string();
        swarm::answer(swarm, channel, Response::Refused { reason });
    }

    /// Serves a page to a peer the node has found in good standing, within its page rate and
    /// hourly budget, and while fewer than [`MAX_PAGE_READS`] pages are being read: read from
    /// the database on a blocking thread, sent when it comes back (see [`CatchUp::respond`]).
    pub(super) fn serve(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ledger: &mut Ledger<PeerId>,
        peer: PeerId,
        cursor: Cursor,
        limit: u32,
        channel: ResponseChannel<Response>,
    ) {
        let now = Instant::now();
        let r = ledger.record(&peer, now);
        if !r.serve.take(1.0, now) {
            return self.refuse(swarm, channel, "too many catch-up requests; slow down");
        }
        if self.reading >= MAX_PAGE_READS {
            return self.refuse(swarm, channel, "busy; try again shortly");
        }
        if !r.served.session_for_page(now, SERVED_SESSION_GAP) {
            return self.refuse(swarm, channel, "catch-up sessions for this hour spent");
        }
        let allowance = r.served.allowance(catchup::MAX_PAGE_EVENTS as u32, now);
        if allowance == 0 {
            return self.refuse(swarm, channel, "catch-up budget for this hour spent");
        }
        let limit = limit.min(allowance);
        self.reading += 1;
        let store = self.store.clone();
        let policy = self.policy;
        let tx = self.served_tx.clone();
        let signing = self.signing.clone();
        self.tracker.spawn_blocking(move || {
            let (signer, own) = &*signing;
            let own = own.snapshot();
            let now = SystemTime::now();
            let response =
                match store.with(|c| catchup::page(c, &cursor, limit, now, policy, signer, &own)) {
                    Ok((events, next)) => Response::Events { events, next },
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot read a catch-up page.");
                        Response::Refused {
                            reason: "temporarily unavailable".into(),
                        }
                    }
                };
            let _ = tx.blocking_send(Served {
                channel,
                peer,
                response,
            });
        });
    }

    /// Sends a page read for a peer, charging what it carries to that peer's budget.
    pub(super) fn respond(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ledger: &mut Ledger<PeerId>,
        s: Served,
    ) {
        self.reading = self.reading.saturating_sub(1);
        if let Response::Events { events, .. } = &s.response {
            let now = Instant::now();
            let bytes: usize = events.iter().map(String::len).sum();
            let r = ledger.record(&s.peer, now);
            r.events_sent += events.len() as u64;
            r.served.charge(events.len(), bytes, now);
            self.counters
                .peer_catch_up_events_served
                .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        swarm::answer(swarm, s.channel, s.response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_peers_then_contributors_then_new_peers_and_never_every_slot_to_new_ones() {
        use Standing::*;
        let free = Slots {
            running: 0,
            with_new: 0,
        };
        let waiting = [
            (New, true),
            (Contributor, true),
            (Trusted, false),
            (Listener, true),
            (Contributor, true),
        ];
        assert_eq!(free.best(&waiting), Some(1), "the first contributor");
        assert_eq!(free.best(&[(New, true), (Trusted, true)]), Some(1));
        assert_eq!(free.best(&[(Listener, true), (Trusted, false)]), None);
        // One session with a new peer under way: another new peer waits, a contributor not.
        let one_new = Slots {
            running: 1,
            with_new: 1,
        };
        assert_eq!(one_new.best(&[(New, true)]), None);
        assert_eq!(one_new.best(&[(New, true), (Contributor, true)]), Some(1));
        let full = Slots {
            running: MAX_CONCURRENT_CATCH_UPS,
            with_new: 0,
        };
        assert_eq!(full.best(&[(Trusted, true)]), None);
    }

    #[test]
    fn recent_keeps_the_latest_keys_up_to_its_cap() {
        let mut r: Recent<u32, u32> = Recent::new(3);
        for k in 0..5 {
            r.insert(k, k * 10);
        }
        assert!(!r.contains(&0) && !r.contains(&1));
        r.insert(2, 99);
        r.insert(5, 50);
        assert!(r.contains(&2), "re-inserted, so kept");
        assert!(!r.contains(&3));
        assert_eq!(r.remove(&2), Some(99));
        assert_eq!((r.map.len(), r.order.len()), (2, 2));
    }
}
