//! Catch-up sessions, the node's side of the catch-up protocol (`catchup` has the messages and
//! the database pages): asking each newly connected peer for pages of what we missed, at most
//! [`MAX_CONCURRENT_CATCH_UPS`] peers at a time, within a page budget per session and a bound
//! on invalid events; and serving peers' page requests from the database on a blocking thread,
//! within each peer's request budget.
//!
//! Owns the sessions under way, the queue of peers waiting for one, where each session resumes,
//! and the catch-up requests in flight. Depends on the swarm's behaviour, the standing ledger and
//! [`Arrivals`]; must not depend on gossip or discovery (the node decides who may be served).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, Swarm};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::arrivals::Arrivals;
use super::catchup::{self, Cursor, Request, Response};
use super::standing::Ledger;
use super::swarm::{self, Behaviour};
use super::validate::{OwnAddresses, Policy, Signer};
use crate::event::format_timestamp;
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
/// Replies from the catch-up page readers waiting for the network task.
pub(super) const SERVED_QUEUE: usize = 64;

/// A page read for a peer, on its way back to the network task to be sent.
pub(super) struct Served {
    channel: ResponseChannel<Response>,
    peer: PeerId,
    response: Response,
}

/// A page asked of a peer: which session, how far it has come.
struct Asked {
    peer: PeerId,
    pages: u32,
    new: u64,
}

pub(super) struct CatchUp {
    store: Arc<ReadPool>,
    policy: Policy,
    /// Where sessions start with peers not met earlier in this run.
    startup_cursor: Cursor,
    /// Where catch-up resumes with a peer we were connected to earlier in this run.
    resume: HashMap<PeerId, Cursor>,
    requests: HashMap<OutboundRequestId, Asked>,
    running: HashSet<PeerId>,
    waiting: VecDeque<PeerId>,
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
        served_tx: mpsc::Sender<Served>,
        tracker: TaskTracker,
        signing: (Signer, Arc<OwnAddresses>),
    ) -> Self {
        Self {
            store,
            policy,
            startup_cursor,
            resume: HashMap::new(),
            requests: HashMap::new(),
            running: HashSet::new(),
            waiting: VecDeque::new(),
            served_tx,
            tracker,
            signing: Arc::new(signing),
        }
    }

    /// Catch-up with `peer` runs now, or when a slot frees.
    pub(super) fn queue(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId) {
        if self.running.contains(&peer) || self.waiting.contains(&peer) {
            return;
        }
        if self.running.len() < MAX_CONCURRENT_CATCH_UPS {
            self.begin(swarm, peer);
        } else {
            self.waiting.push_back(peer);
        }
    }

    /// A peer's last connection closed: its session ends (without starting a waiting one), and
    /// the next resumes shortly before now.
    pub(super) fn disconnected(&mut self, peer: PeerId) {
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
        self.running.remove(&peer);
        self.waiting.retain(|p| *p != peer);
    }

    fn begin(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId) {
        let cursor = self
            .resume
            .remove(&peer)
            .unwrap_or_else(|| self.startup_cursor.clone());
        tracing::debug!(%peer, since = %cursor.since, "Catching up.");
        self.running.insert(peer);
        self.request_page(swarm, peer, cursor, 0, 0);
    }

    fn request_page(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        cursor: Cursor,
        pages: u32,
        new: u64,
    ) {
        let id = swarm.behaviour_mut().catch_up.send_request(
            &peer,
            Request::CatchUp {
                cursor,
                limit: catchup::MAX_PAGE_EVENTS as u32,
            },
        );
        self.requests.insert(id, Asked { peer, pages, new });
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
            Some(a) => self.end(swarm, a.peer),
            None => {}
        }
    }

    /// A request that got no answer: if it was one of ours, the session ends.
    pub(super) fn on_failure(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        id: OutboundRequestId,
        peer: PeerId,
        error: &dyn std::fmt::Display,
    ) {
        if self.requests.remove(&id).is_some() {
            tracing::debug!(%peer, %error, "Catch-up request failed.");
            self.end(swarm, peer);
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
        } = asked;
        let Response::Events { events, next } = response else {
            if let Response::Refused { reason } = response {
                tracing::info!(%peer, %reason, "A peer refused catch-up.");
            }
            self.end(swarm, peer);
            return;
        };
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut invalid = 0;
        let mut fresh = Vec::new();
        for json in events.iter().take(catchup::MAX_PAGE_EVENTS) {
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
            self.end(swarm, peer);
            return;
        }
        match next {
            Some(cursor) if pages + 1 < MAX_PAGES_PER_SESSION && !events.is_empty() => {
                self.request_page(swarm, peer, cursor, pages + 1, new)
            }
            Some(cursor) if pages + 1 < MAX_PAGES_PER_SESSION => {
                // A page of nothing but skipped rows still moves on.
                self.request_page(swarm, peer, cursor, pages + 1, new)
            }
            _ => {
                if new > 0 {
                    tracing::info!(%peer, events = new, pages = pages + 1, "Caught up with a peer.");
                }
                self.end(swarm, peer);
            }
        }
    }

    /// A session ends; waiting peers still connected take the free slots.
    fn end(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId) {
        self.running.remove(&peer);
        while self.running.len() < MAX_CONCURRENT_CATCH_UPS {
            let Some(next) = self.waiting.pop_front() else {
                break;
            };
            if swarm.is_connected(&next) {
                self.begin(swarm, next);
            }
        }
    }

    /// Serves a page to a peer the node has found in good standing, within its request
    /// budget: read from the database on a blocking thread, sent when it comes back (see
    /// [`CatchUp::respond`]).
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
        if !ledger.record(&peer, now).serve.take(1.0, now) {
            let reason = "too many catch-up requests; slow down".to_string();
            swarm::answer(swarm, channel, Response::Refused { reason });
            return;
        }
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

    /// Sends a page read for a peer, counting what it carries as sent to that peer.
    pub(super) fn respond(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ledger: &mut Ledger<PeerId>,
        s: Served,
    ) {
        if let Response::Events { events, .. } = &s.response {
            ledger.record(&s.peer, Instant::now()).events_sent += events.len() as u64;
        }
        swarm::answer(swarm, s.channel, s.response);
    }
}
