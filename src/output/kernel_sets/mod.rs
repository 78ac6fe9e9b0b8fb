//! Kernel sets: the bad-actor set enforced by the kernel. `--nftables` keeps the table
//! `inet sentrypeer` (sets `bad_actors_v4`/`bad_actors_v6` and a chain on input that drops
//! them), `--ipset NAME` keeps ipset sets NAME and NAME6 for the operator's iptables rules.
//! Every element times out in the kernel when the actor's listing ends, so the sets stay right
//! even while the node is stopped.
//!
//! Two paths fill the sets, both on the output's thread, in batches (one `nft -f` transaction
//! or one `ipset restore` run each, at most ten a second):
//!
//! - **events**: each probe this node captures lists its source for the TTL from the event's
//!   time (the rule's verdict for a local sighting), unless the rule excludes it (allowlist,
//!   this node's own addresses). The address reaches the kernel at once on an idle node,
//!   within a tenth of a second under load, without waiting for the database. Only local
//!   events come this way: a peer's report lists nothing on its own.
//! - **the store**: every second the change feed (`change_seq` after the last cursor) brings
//!   what the database decided since: corroborated peers' listings, extensions, removals (an
//!   allowlist reload, an address found to be this node's own). At startup, after SIGHUP or an
//!   allowlist reload, after a failed batch, and every minute (less often when a reconcile
//!   takes long), the sets are rewritten whole from the store in one atomic step, which also
//!   repairs what someone else did to them.
//!
//! The backends (`nftables.rs`, `ipset.rs`) only render scripts and run their tool.

pub mod ipset;
pub mod nftables;
mod tool;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{BatchSink, BuildContext, BuildError};
use crate::actors::{Kind, Rules};
use crate::event::{Event, Origin};
use crate::metrics::KernelSetStats;
use crate::settings::ConfigError;
use crate::store::ReadPool;

pub(crate) use tool::Tool;

/// Pending changes wait at most this long for company before they are applied: a batch per
/// tenth of a second at most, so a stream of new addresses costs ten tool runs a second, not
/// one per probe.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often the change feed is read.
const FEED_EVERY: Duration = Duration::from_secs(1);
/// How often, at least, the sets are rewritten whole from the store.
const FULL_EVERY: Duration = Duration::from_secs(60);
/// A whole rewrite may take at most this share of the time (one in a hundred): a node with
/// millions of listed addresses rewrites less often than every minute.
const FULL_DUTY: u32 = 100;
/// After a failure, the first wait before the sets are rewritten whole; doubles to a minute.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Actors read from the store per page.
const PAGE_ROWS: i64 = 2000;

/// An element as the tools take it: an address and the time it has left (`None`: no timeout,
/// `--actor-ttl forever`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Element {
    pub ip: IpAddr,
    pub timeout_ms: Option<u64>,
}

/// One batch of changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Addresses not in the sets.
    pub add: Vec<Element>,
    /// Addresses that may be in the sets already, with a new timeout.
    pub replace: Vec<Element>,
    /// Addresses to take out before their timeout.
    pub remove: Vec<IpAddr>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.remove.is_empty()
    }
}

/// A kernel-set mechanism: renders scripts and runs its tool.
pub(crate) trait Backend: Send + 'static {
    /// Makes the sets hold exactly `elements` (creating what is missing), in one atomic step.
    fn load(&mut self, elements: &[Element]) -> Result<(), String>;
    /// Applies one batch of changes.
    fn apply(&mut self, changes: &Changes) -> Result<(), String>;
}

/// Whether an address may go in a kernel set at all. Loopback is never put there: a probe from
/// this host (a test, a local scan) is recorded and listed, but dropping 127.0.0.1 would cut
/// the host off from itself.
pub(crate) fn enforceable(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST))
}

/// An element the sets hold, by the node's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    /// Its expiry, ms since the epoch (`i64::MAX`: never).
    until: i64,
    /// The store has listed it at least this long. False while only the event path has: the
    /// database may not have written the event yet, and a reconcile keeps such an element.
    confirmed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Add { until: i64, replace: bool },
    Remove,
}

/// The shared part of both outputs: what the sets should hold, fed by events and the store.
pub(crate) struct KernelSet<B: Backend> {
    backend: B,
    rules: Arc<Rules>,
    store: ReadPool,
    stats: Arc<KernelSetStats>,
    known: HashMap<IpAddr, Known>,
    pending: HashMap<IpAddr, Pending>,
    /// The oldest capture (ms since the epoch) among the pending additions from events.
    oldest_capture_ms: Option<i64>,
    /// The change feed's position; `None` until the first whole load.
    cursor: Option<i64>,
    last_flush: Instant,
    next_feed: Instant,
    next_full: Instant,
    retry: Duration,
    /// A batch or a load failed: changes wait for the whole rewrite that retries.
    failing: bool,
    /// Set on SIGHUP: rewrite the sets whole.
    hangup: Arc<AtomicBool>,
    allow_generation: u64,
}

impl<B: Backend> KernelSet<B> {
    pub(crate) fn new(backend: B, cx: &mut BuildContext<'_>, stats: Arc<KernelSetStats>) -> Self {
        let hangup = Arc::new(AtomicBool::new(false));
        let flag = hangup.clone();
        cx.on_hangup
            .push(Box::new(move || flag.store(true, Ordering::Relaxed)));
        cx.kernel_sets.push(stats.clone());
        let now = Instant::now();
        KernelSet {
            backend,
            rules: cx.rules.clone(),
            store: ReadPool::new(cx.db_file),
            stats,
            known: HashMap::new(),
            pending: HashMap::new(),
            oldest_capture_ms: None,
            cursor: None,
            last_flush: now,
            next_feed: now + FEED_EVERY,
            next_full: now,
            retry: FIRST_RETRY,
            failing: false,
            hangup,
            allow_generation: cx.rules.allow_generation(),
        }
    }

    /// A new listing or expiry for `ip`, from an event (`confirmed` false) or the store.
    fn list(&mut self, ip: IpAddr, until: i64, confirmed: bool, now_ms: i64) {
        if until <= now_ms {
            return;
        }
        let slack = self.rules.ttl.extension_slack_ms();
        let replace = match self.known.get_mut(&ip) {
            None => false,
            Some(k) => {
                let later = until.saturating_sub(k.until);
                let earlier = k.until.saturating_sub(until);
                if later < slack && earlier < slack {
                    // The same listing: the store now vouches for what an event put there.
                    k.confirmed |= confirmed;
                    return;
                }
                if earlier >= slack && (!confirmed || !k.confirmed) {
                    // Ahead of the store (an event it has not written yet): keep the later time.
                    return;
                }
                true
            }
        };
        self.known.insert(ip, Known { until, confirmed });
        // An addition not yet applied stays a plain addition; anything else may be in the kernel.
        let replace = match self.pending.get(&ip) {
            Some(Pending::Add { replace, .. }) => *replace,
            Some(Pending::Remove) => true,
            None => replace,
        };
        self.pending.insert(ip, Pending::Add { until, replace });
    }

    /// The store no longer lists `ip`.
    fn unlist(&mut self, ip: IpAddr, now_ms: i64) {
        let Some(k) = self.known.get(&ip).copied() else {
            return;
        };
        if !k.confirmed && k.until > now_ms && !self.rules.excluded(ip) {
            // Listed by an event the database has not written yet.
            return;
        }
        self.known.remove(&ip);
        match self.pending.get(&ip) {
            Some(Pending::Add { replace: false, .. }) => {
                self.pending.remove(&ip);
            }
            _ => {
                self.pending.insert(ip, Pending::Remove);
            }
        }
    }

    /// Applies what is pending in one batch.
    fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Only a batch that goes out counts: on an idle node a probe's address goes at once.
        self.last_flush = Instant::now();
        let now_ms = crate::actors::now_ms();
        let mut changes = Changes::default();
        for (ip, p) in self.pending.drain() {
            match p {
                Pending::Add { until, replace } => {
                    let Some(timeout_ms) = remaining(until, now_ms) else {
                        if replace {
                            changes.remove.push(ip);
                        }
                        continue;
                    };
                    let e = Element { ip, timeout_ms };
                    if replace {
                        changes.replace.push(e);
                    } else {
                        changes.add.push(e);
                    }
                }
                Pending::Remove => changes.remove.push(ip),
            }
        }
        let oldest = self.oldest_capture_ms.take();
        if changes.is_empty() {
            return Ok(());
        }
        let result = self.backend.apply(&changes);
        let s = self.stats.clone();
        match &result {
            Ok(()) => {
                s.batches.fetch_add(1, Ordering::Relaxed);
                s.added.fetch_add(
                    (changes.add.len() + changes.replace.len()) as u64,
                    Ordering::Relaxed,
                );
                s.removed
                    .fetch_add(changes.remove.len() as u64, Ordering::Relaxed);
                if let Some(oldest) = oldest {
                    let delay = crate::actors::now_ms().saturating_sub(oldest).max(0) as u64;
                    s.last_delay_ms.store(delay, Ordering::Relaxed);
                    s.max_delay_ms.fetch_max(delay, Ordering::Relaxed);
                }
            }
            Err(_) => self.failed(),
        }
        s.elements.store(self.known.len() as u64, Ordering::Relaxed);
        result
    }

    /// A batch or a load failed: rewrite the sets whole soon (which also recreates what was
    /// deleted under us), waiting longer after each failure.
    fn failed(&mut self) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.failing = true;
        self.next_full = Instant::now() + self.retry;
        self.retry = (self.retry * 2).min(FULL_EVERY);
    }

    /// Reads what the store decided since the cursor.
    fn follow_feed(&mut self) -> Result<(), String> {
        let Some(mut after) = self.cursor else {
            return Ok(());
        };
        let upto = self
            .store
            .with(crate::store::actors::current_seq)
            .map_err(|e| format!("reading the bad-actor set: {e}"))? as i64;
        while after < upto {
            let rows = self
                .store
                .with(|c| crate::store::actors::page_by_change(c, Kind::Ip, after, upto, PAGE_ROWS))
                .map_err(|e| format!("reading the bad-actor set: {e}"))?;
            let now_ms = crate::actors::now_ms();
            for row in &rows {
                let Ok(ip) = row.key.parse::<IpAddr>() else {
                    continue;
                };
                match row.listed_until(Kind::Ip, &self.rules, now_ms) {
                    Some(until) if enforceable(ip) => self.list(ip, until, true, now_ms),
                    _ => self.unlist(ip, now_ms),
                }
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == PAGE_ROWS => after = last.change_seq,
                _ => after = upto,
            }
        }
        self.cursor = Some(after);
        Ok(())
    }

    /// Rewrites the sets whole: every address the store lists now, and those events listed
    /// that the database has not written yet.
    fn load_all(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let read = |e: rusqlite::Error| format!("reading the bad-actor set: {e}");
        let cursor = self
            .store
            .with(crate::store::actors::current_seq)
            .map_err(read)? as i64;
        let now_ms = crate::actors::now_ms();
        let mut known: HashMap<IpAddr, Known> = HashMap::new();
        let mut after = String::new();
        loop {
            let rows = self
                .store
                .with(|c| crate::store::actors::page_by_key(c, Kind::Ip, &after, PAGE_ROWS))
                .map_err(read)?;
            for row in &rows {
                let Ok(ip) = row.key.parse::<IpAddr>() else {
                    continue;
                };
                if let Some(until) = row.listed_until(Kind::Ip, &self.rules, now_ms) {
                    if enforceable(ip) {
                        known.insert(
                            ip,
                            Known {
                                until,
                                confirmed: true,
                            },
                        );
                    }
                }
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == PAGE_ROWS => after = last.key.clone(),
                _ => break,
            }
        }
        for (ip, k) in &self.known {
            if !k.confirmed && k.until > now_ms && !self.rules.excluded(*ip) {
                let entry = known.entry(*ip).or_insert(*k);
                entry.until = entry.until.max(k.until);
            }
        }
        let elements: Vec<Element> = known
            .iter()
            .filter_map(|(ip, k)| {
                remaining(k.until, now_ms).map(|timeout_ms| Element {
                    ip: *ip,
                    timeout_ms,
                })
            })
            .collect();
        self.backend.load(&elements)?;
        self.known = known;
        self.pending.clear();
        self.oldest_capture_ms = None;
        self.cursor = Some(cursor);
        self.retry = FIRST_RETRY;
        self.failing = false;
        let took = started.elapsed();
        self.next_full = Instant::now() + FULL_EVERY.max(took * FULL_DUTY);
        let s = &self.stats;
        s.reconciles.fetch_add(1, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.elements.store(self.known.len() as u64, Ordering::Relaxed);
        s.last_reconcile_ms
            .store(crate::actors::now_ms().max(0) as u64, Ordering::Relaxed);
        s.last_reconcile_duration_ms
            .store(took.as_millis() as u64, Ordering::Relaxed);
        tracing::debug!(
            elements = elements.len(),
            ?took,
            "Kernel sets reconciled with the store."
        );
        Ok(())
    }

    /// Whatever is due: a whole rewrite, the feed, a flush of pending changes.
    fn upkeep(&mut self, flush_now: bool) -> Result<(), String> {
        let now = Instant::now();
        let generation = self.rules.allow_generation();
        let reload =
            self.hangup.swap(false, Ordering::Relaxed) || generation != self.allow_generation;
        self.allow_generation = generation;
        if reload || now >= self.next_full {
            if let Err(e) = self.load_all() {
                self.failed();
                return Err(e);
            }
            return Ok(());
        }
        if now >= self.next_feed {
            self.next_feed = now + FEED_EVERY;
            self.follow_feed()?;
        }
        // While failing, what changes is kept in `known` for the retry's whole rewrite: a
        // broken tool costs one run per retry, not one per batch.
        if !self.failing && (flush_now || self.last_flush.elapsed() >= FLUSH_EVERY) {
            self.flush()?;
        }
        Ok(())
    }
}

/// The time left until `until`, for a kernel timeout: `Some(None)` for never, `None` if over.
fn remaining(until: i64, now_ms: i64) -> Option<Option<u64>> {
    if until == i64::MAX {
        return Some(None);
    }
    let left = until.saturating_sub(now_ms);
    (left > 0).then_some(Some(left as u64))
}

impl<B: Backend> BatchSink for KernelSet<B> {
    fn write(&mut self, batch: &[Arc<Event>]) -> Result<(), String> {
        let now_ms = crate::actors::now_ms();
        for e in batch {
            if e.origin != Origin::Local {
                continue;
            }
            let ip = e.source.ip().to_canonical();
            // A probe "from" the address it was sent to is forged: never block ourselves.
            if !enforceable(ip)
                || ip == e.destination.ip().to_canonical()
                || self.rules.excluded(ip)
            {
                continue;
            }
            let seen = crate::store::actors::timestamp_ms(&e.timestamp).unwrap_or(now_ms);
            let before = self.pending.len();
            self.list(ip, self.rules.ttl.expiry(seen), false, now_ms);
            if self.pending.len() > before {
                self.oldest_capture_ms = Some(self.oldest_capture_ms.map_or(seen, |o| o.min(seen)));
            }
        }
        self.upkeep(false)
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(FLUSH_EVERY)
    }

    fn tick(&mut self) {
        if let Err(error) = self.upkeep(true) {
            tracing::warn!(%error, "Kernel set update failed; the sets will be rewritten whole.");
        }
    }
}

impl<B: Backend> Drop for KernelSet<B> {
    /// The queue closed (shutdown): what is pending still goes to the kernel.
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            if let Err(error) = self.flush() {
                tracing::warn!(%error, "Kernel set update failed at shutdown; the next start rewrites the sets.");
            }
        }
    }
}

/// The startup error for a missing tool.
pub(crate) fn missing(option: &str, value: &str, why: String) -> BuildError {
    BuildError::Config(ConfigError::new(option, value, why))
}

/// Turns a probe's failure into the startup error for `option`: the tool's words, and what
/// the node needs.
pub(crate) fn probe_error(option: &str, value: &str, tool_error: &str) -> BuildError {
    BuildError::Config(ConfigError::new(
        option,
        value,
        format!(
            "{tool_error}; managing kernel sets needs CAP_NET_ADMIN (run as root, or grant it: \
             AmbientCapabilities=CAP_NET_ADMIN in a systemd unit)"
        ),
    ))
}

#[cfg(test)]
mod tests;
