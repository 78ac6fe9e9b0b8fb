//! The one writer: inserts a batch of events and updates the summaries in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use foldhash::HashMap;
use rusqlite::Connection;
use std::collections::hash_map::Entry;
use uuid::Uuid;

use super::actors::{ActorWriter, ReevaluatePos, Sighting, timestamp_ms};
use crate::actors::{Kind, Rules};
use crate::event::{Event, Origin};
use crate::metrics::WebhookStats;

/// Owns the read-write connection. Not `Sync`: it lives on the sqlite output's thread.
#[derive(Debug)]
pub struct Writer {
    conn: Connection,
    outbox: Option<OutboxWriter>,
    /// The listing rule, applied to every actor a batch touches.
    rules: Arc<Rules>,
    actors: ActorWriter,
    /// The analytics buckets, counted in the same transaction as the events.
    analytics: super::analytics::Aggregator,
    /// A re-evaluation of every actor under a changed rule, in progress.
    reevaluating: Option<ReevaluatePos>,
    /// The allowlist generation the stored verdicts follow.
    allow_generation: u64,
    /// Events older than this are deleted a step at a time (`--retention`); `None` keeps all.
    retention: Option<std::time::Duration>,
    /// Sightings the summaries have not been told yet (see [`Writer::write_batch_behind`]).
    pending: Sightings,
    /// The maps a batch gathers its sightings in, kept empty between batches.
    batch: Sightings,
    /// Declared last: dropped after the connection, it runs the final checkpoint.
    checkpointer: super::checkpoint::Checkpointer,
}

/// Actors by key, with what the writer saw of each. Hashed, not ordered: an event's sighting
/// costs a hash and a compare, where an ordered map compared its key a dozen times (and again
/// when a batch's sightings joined the pending ones); the keys are sorted once, when the
/// summaries are written.
type ByKey = HashMap<String, Sighting>;

/// What the writer saw of each actor and has not yet written to the summaries and the
/// bad-actor facts: one batch's, or several batches' while it is behind.
#[derive(Debug, Default)]
struct Sightings {
    ips: ByKey,
    numbers: ByKey,
    /// The last `honey` row they count: the summaries' watermark once they are written.
    last_honey_id: Option<i64>,
    /// When the oldest of them was gathered.
    since: Option<std::time::Instant>,
}

impl Sightings {
    fn keys(&self) -> usize {
        self.ips.len() + self.numbers.len()
    }

    /// Takes in a later batch's sightings, leaving its maps empty (with their room).
    fn absorb(&mut self, later: &mut Sightings) {
        for (mine, theirs) in [
            (&mut self.ips, &mut later.ips),
            (&mut self.numbers, &mut later.numbers),
        ] {
            for (key, s) in theirs.drain() {
                match mine.entry(key) {
                    Entry::Occupied(o) => o.into_mut().merge(&s),
                    Entry::Vacant(v) => {
                        v.insert(s);
                    }
                }
            }
        }
        self.last_honey_id = later.last_honey_id.take().or(self.last_honey_id);
        self.since = self.since.or(later.since.take());
    }

    /// Forgets them all, keeping the maps' room for the next ones.
    fn clear(&mut self) {
        self.ips.clear();
        self.numbers.clear();
        self.last_honey_id = None;
        self.since = None;
    }
}

/// The most actors the pending sightings hold (a few hundred bytes each: about 7 MB) before
/// they are written whatever the backlog: bounds their memory in a flood of distinct numbers.
/// With many distinct numbers, each write of the summaries changes nearly every page of them,
/// so it costs about the same for 16,000 actors as for 28,000: fewer, bigger writes are the
/// saving, within the memory target. 7/8 of 32,768: a hash map grows (doubles its table) when
/// it is 7/8 full, so either kind's map fits a table of 32,768 slots; 32,768 keys doubled the
/// numbers' table, 4 MB more at a flood's peak.
const MAX_PENDING_KEYS: usize = 28_672;

/// Adds one event to an actor's sighting, copying its key only when it is new.
fn sight(map: &mut ByKey, key: &str, ts: &str, ms: i64, author: Option<&str>) {
    match map.get_mut(key) {
        Some(s) => s.add(ts, ms, author),
        None => {
            let mut s = Sighting::new(ts, ms);
            s.add(ts, ms, author);
            map.insert(key.to_owned(), s);
        }
    }
}

/// Writes what two sets of sightings (pending, and a batch's) add to the summaries and the
/// facts, one statement per actor, in key order: neighbouring keys share B-tree pages, so each
/// page is changed while it is hot. Moves the watermark to the last row they count.
fn write_summaries(
    tx: &rusqlite::Transaction<'_>,
    actors: &mut ActorWriter,
    rules: &Rules,
    pending: &Sightings,
    batch: &Sightings,
) -> rusqlite::Result<()> {
    let mut keys: Vec<(&str, Option<&Sighting>, Option<&Sighting>)> = Vec::new();
    for (kind, a, b) in [
        (Kind::Ip, &pending.ips, &batch.ips),
        (Kind::Number, &pending.numbers, &batch.numbers),
    ] {
        if a.is_empty() && b.is_empty() {
            continue;
        }
        keys.clear();
        keys.reserve(a.len() + b.len());
        keys.extend(a.iter().map(|(k, x)| (k.as_str(), Some(x), b.get(k))));
        keys.extend(
            b.iter()
                .filter(|(k, _)| !a.contains_key(*k))
                .map(|(k, y)| (k.as_str(), None, Some(y))),
        );
        keys.sort_unstable_by(|x, y| x.0.cmp(y.0));
        let mut stmts = super::actors::Upsert::prepare(tx, kind)?;
        for &(key, x, y) in &keys {
            match (x, y) {
                (Some(x), Some(y)) => {
                    let mut both = x.clone();
                    both.merge(y);
                    actors.upsert(tx, &mut stmts, key, &both, rules)?;
                }
                (Some(s), None) | (None, Some(s)) => {
                    actors.upsert(tx, &mut stmts, key, s, rules)?;
                }
                (None, None) => {}
            }
        }
    }
    actors.finish(tx)?;
    if let Some(id) = batch.last_honey_id.or(pending.last_honey_id) {
        super::set_watermark(tx, id)?;
    }
    Ok(())
}

/// Where a batch's time went (`RUST_LOG=sentrypeer::store=trace`): rows, summaries, analytics,
/// commit, in milliseconds.
fn timing(
    events: usize,
    flushed: bool,
    took: [std::time::Duration; 3],
    started: std::time::Instant,
) {
    let total = started.elapsed();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    tracing::trace!(
        events,
        flushed,
        rows_ms = ms(took[0]),
        summaries_ms = ms(took[1].saturating_sub(took[0])),
        analytics_ms = ms(took[2].saturating_sub(took[1])),
        commit_ms = ms(total.saturating_sub(took[2])),
        "Batch written."
    );
}

impl Drop for Writer {
    /// The summaries are written before the connection closes, so a clean stop leaves nothing
    /// for the next start to fold in.
    fn drop(&mut self) {
        match self.flush_summaries() {
            Ok(()) => {
                if let Err(error) = super::mark_writer_alive(&self.conn, None) {
                    tracing::debug!(%error, "Could not mark the writer stopped.");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "Could not write the last summaries; the next start folds them in.");
            }
        }
    }
}

/// Queues every written event for the WebHook in the same transaction (see `store::outbox`).
#[derive(Debug)]
pub struct OutboxWriter {
    /// Rows the outbox may hold; beyond it the oldest are dead-lettered as "outbox full".
    pub cap: u64,
    /// Wakes the deliverer after each commit; dropping it (the writer's thread ends) tells the
    /// deliverer that no more rows will come.
    pub wake: tokio::sync::mpsc::Sender<()>,
    pub stats: Arc<WebhookStats>,
}

/// Events deleted per transaction under `--retention`: tens of milliseconds, so capture's queue
/// never waits long behind it.
const PRUNE_STEP_ROWS: i64 = 5_000;
/// The writer's time given to pruning per upkeep tick (one a second): a fifth, enough to keep
/// up with tens of thousands of events a second ageing out, and to clear a backlog of
/// millions in minutes without stalling capture.
const PRUNE_TIME_PER_TICK: std::time::Duration = std::time::Duration::from_millis(200);

const INSERT_HONEY: &str =
    "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip,
  called_number, transport_type, method, user_agent, sip_message, created_by_node_id,
  received_from_peer, destination_ip, created_at)
  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// Rows in insertion order (rowid) with one index on the time: appended, never placed at random
/// (an event's UUID as the key cost a random B-tree write per REGISTER).
const INSERT_SIP_AUTH: &str = "INSERT INTO sentrypeer_sip_auth (event_uuid,
  event_timestamp, source_ip, method, username, auth_header, realm, uri, response, own_nonce,
  trap_password_matched, registered_attacker)
  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

const UPSERT_USERNAME: &str = "INSERT INTO sentrypeer_usernames
  (username, seen_last, seen_last_ms, seen_count) VALUES (?1, ?2, ?3, ?4)
  ON CONFLICT(username) DO UPDATE SET seen_last = max(seen_last, excluded.seen_last),
    seen_last_ms = max(seen_last_ms, excluded.seen_last_ms),
    seen_count = seen_count + excluded.seen_count";

const INSERT_REGISTERED: &str = "INSERT INTO sentrypeer_registered_events
  (event_uuid, event_timestamp, source_ip, method, called_number) VALUES (?1, ?2, ?3, ?4, ?5)";

/// A peer's event in the form its author signed, kept to serve it on in catch-up.
const INSERT_SIGNED: &str = "INSERT OR IGNORE INTO sentrypeer_signed_events
  (event_uuid, author, at_ms, payload) VALUES (?1, ?2, ?3, ?4)";

impl Writer {
    pub(super) fn new(conn: Connection, path: &std::path::Path) -> Result<Self, super::StoreError> {
        conn.set_prepared_statement_cache_capacity(32);
        let actors = ActorWriter::load(&conn)?;
        let checkpointer =
            super::checkpoint::Checkpointer::spawn(path).map_err(super::StoreError::Thread)?;
        let mut w = Self {
            conn,
            outbox: None,
            rules: Arc::new(Rules::default()),
            actors,
            analytics: super::analytics::Aggregator::default(),
            reevaluating: None,
            retention: None,
            allow_generation: 0,
            pending: Sightings::default(),
            batch: Sightings::default(),
            checkpointer,
        };
        super::mark_writer_alive(&w.conn, Some(crate::actors::now_ms()))?;
        w.check_rules()?;
        Ok(w)
    }

    /// Puts a listing rule in force. When it differs from the one the database was last
    /// written under (a new TTL, allowlist, threshold), every actor is re-evaluated, a step at a
    /// time between batches (see [`Writer::maintain`]).
    pub fn set_rules(&mut self, rules: Arc<Rules>) -> rusqlite::Result<()> {
        self.rules = rules;
        self.check_rules()
    }

    /// From now on, delete events older than `keep` during upkeep.
    pub fn set_retention(&mut self, keep: Option<std::time::Duration>) {
        self.retention = keep;
    }

    /// Where source addresses are (`--geoip-db`), for the analytics' countries and networks.
    pub fn set_locate(&mut self, locate: Option<Arc<dyn super::analytics::Locate>>) {
        self.analytics.set_locate(locate);
    }

    /// The rule in force (shared with readers and the reload on SIGHUP).
    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// Starts a re-evaluation if the rule's fingerprint changed since it was stored.
    pub fn check_rules(&mut self) -> rusqlite::Result<()> {
        self.allow_generation = self.rules.allow_generation();
        let fingerprint = self.rules.fingerprint();
        if super::actors::stored_rules(&self.conn)? != fingerprint {
            super::actors::store_rules(&self.conn, &fingerprint)?;
            self.reevaluating = Some(ReevaluatePos::start());
        }
        Ok(())
    }

    /// Upkeep between batches: ends listings whose time is up, takes one step of a
    /// re-evaluation in progress, drops peers' signed events too old to serve, and old events
    /// under `--retention`. Each in a short transaction of its own, the deletions within
    /// `PRUNE_TIME_PER_TICK` together. Returns how many listings changed.
    pub fn maintain(&mut self, now_ms: i64) -> rusqlite::Result<u64> {
        if self.rules.allow_generation() != self.allow_generation {
            // The allowlist was reloaded (SIGHUP): tell consumers what it changed.
            self.check_rules()?;
        }
        let tx = self.conn.transaction()?;
        super::mark_writer_alive(&tx, Some(now_ms))?;
        let none = Sightings::default();
        write_summaries(&tx, &mut self.actors, &self.rules, &self.pending, &none)?;
        let mut changed = self.actors.sweep(&tx, &self.rules, now_ms)?;
        if let Some(pos) = self.reevaluating.take() {
            let before = self.actors.seq();
            self.reevaluating = self.actors.reevaluate_step(&tx, &self.rules, now_ms, pos)?;
            changed += (self.actors.seq() - before) as u64;
        }
        self.actors.finish(&tx)?;
        self.analytics.prune(&tx, now_ms)?;
        tx.commit()?;
        self.pending = Sightings::default();
        self.checkpoint_if_due();
        let kept_ms = i64::try_from(super::SIGNED_EVENTS_KEPT.as_millis()).unwrap_or(i64::MAX);
        let started = std::time::Instant::now();
        while self.prune_signed_before(now_ms.saturating_sub(kept_ms))? == PRUNE_STEP_ROWS as u64
            && started.elapsed() < PRUNE_TIME_PER_TICK
        {}
        if let Some(keep) = self.retention {
            let cutoff = now_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
            while self.prune_before(cutoff)? == PRUNE_STEP_ROWS as u64
                && started.elapsed() < PRUNE_TIME_PER_TICK
            {}
        }
        Ok(changed)
    }

    /// Deletes up to `PRUNE_STEP_ROWS` events older than `cutoff_ms` in one short transaction,
    /// keeping the summaries and the bad-actor facts as they were. Returns how many went.
    pub fn prune_before(&mut self, cutoff_ms: i64) -> rusqlite::Result<u64> {
        let cutoff = crate::event::format_timestamp(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(cutoff_ms.max(0) as u64),
        );
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE sentrypeer_retention SET pruning = 1 WHERE id = 1",
            [],
        )?;
        let n = tx.execute(
            "DELETE FROM honey WHERE honey_id IN
               (SELECT honey_id FROM honey WHERE event_timestamp < ?1 LIMIT ?2)",
            rusqlite::params![cutoff, PRUNE_STEP_ROWS],
        )?;
        // The credential rows of the same events go with them (the usernames summary stays,
        // as the other summaries do).
        for table in ["sentrypeer_sip_auth", "sentrypeer_registered_events"] {
            tx.execute(
                &format!(
                    "DELETE FROM {table} WHERE event_uuid IN
                       (SELECT event_uuid FROM {table} WHERE event_timestamp < ?1 LIMIT ?2)"
                ),
                rusqlite::params![cutoff, PRUNE_STEP_ROWS],
            )?;
        }
        tx.execute(
            "UPDATE sentrypeer_retention SET pruning = 0, pruned = pruned + ?1 WHERE id = 1",
            [n as i64],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }

    /// Deletes up to `PRUNE_STEP_ROWS` peers' signed events dated before `cutoff_ms` (too old
    /// for any peer to accept) in one short transaction. Returns how many went.
    pub fn prune_signed_before(&mut self, cutoff_ms: i64) -> rusqlite::Result<u64> {
        let n = self.conn.execute(
            "DELETE FROM sentrypeer_signed_events WHERE rowid IN
               (SELECT rowid FROM sentrypeer_signed_events WHERE at_ms < ?1 LIMIT ?2)",
            rusqlite::params![cutoff_ms, PRUNE_STEP_ROWS],
        )?;
        Ok(n as u64)
    }

    /// Whether a re-evaluation is still in progress.
    pub fn reevaluating(&self) -> bool {
        self.reevaluating.is_some()
    }

    /// From now on, also queue every event for the WebHook.
    pub fn queue_for_webhook(&mut self, outbox: OutboxWriter) {
        self.outbox = Some(outbox);
    }

    /// Writes every event of the batch, or none of them, and brings the summaries and the
    /// bad-actor facts up to date in the same transaction.
    pub fn write_batch(&mut self, events: &[Arc<Event>]) -> rusqlite::Result<()> {
        self.write_events(events, false)
    }

    /// Writes the batch as [`Writer::write_batch`] does, but the summaries and facts are
    /// gathered and written later (while more events wait behind it, or in a stream: the
    /// database output decides): with a later [`Writer::write_batch`], at the upkeep
    /// ([`Writer::maintain`]), by [`Writer::flush_summaries`], or when `MAX_PENDING_KEYS`
    /// actors are pending. In a flood of distinct numbers every page of the summaries changes
    /// in every write of them, so writing them once for many batches is most of the writer's
    /// work saved; lookups lag by that long. The watermark moves only with the summaries: after
    /// a crash, opening the file folds the rows they missed back in.
    pub fn write_batch_behind(&mut self, events: &[Arc<Event>]) -> rusqlite::Result<()> {
        self.write_events(events, true)
    }

    /// How long the oldest sighting not yet in the summaries has waited (`None`: none waits).
    pub fn pending_age(&self) -> Option<std::time::Duration> {
        self.pending.since.map(|at| at.elapsed())
    }

    /// Writes the pending summaries now, in a transaction of their own.
    pub fn flush_summaries(&mut self) -> rusqlite::Result<()> {
        if self.pending.last_honey_id.is_none() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        write_summaries(
            &tx,
            &mut self.actors,
            &self.rules,
            &self.pending,
            &Sightings::default(),
        )?;
        tx.commit()?;
        self.pending.clear();
        Ok(())
    }

    /// Between two transactions: finishes the checkpoint the checkpointer asks for, so that
    /// the next transaction starts the WAL over (see `store::checkpoint`).
    fn checkpoint_if_due(&self) {
        if self.checkpointer.wal_restart_due() {
            super::checkpoint::finish_checkpoint(&self.conn);
        }
    }

    /// After a batch committed: its sightings were written with the pending ones, or join them.
    fn written(&mut self, mut seen: Sightings, flushed: bool) {
        if flushed {
            self.pending.clear();
            seen.clear();
        } else {
            self.pending.absorb(&mut seen);
        }
        self.batch = seen;
    }

    fn write_events(&mut self, events: &[Arc<Event>], behind: bool) -> rusqlite::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // username → (newest timestamp, its ms, events in this batch)
        let mut usernames: BTreeMap<&str, (&str, i64, i64)> = BTreeMap::new();
        let mut new_own = Vec::new();
        let mut probes = Vec::with_capacity(events.len());
        // The last batch's maps, empty: a batch's map grown anew each time (doubling, each
        // table copied into the next) left the allocator's heap fragmented, 5 MB more at a
        // flood's peak.
        let mut seen = std::mem::take(&mut self.batch);
        seen.clear();
        let started = std::time::Instant::now();
        let mut took = [std::time::Duration::ZERO; 3];
        let tx = self.conn.transaction()?;
        let flush;
        {
            let mut insert = tx.prepare_cached(INSERT_HONEY)?;
            // Upstream's `created_at` (its column default, `STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')`:
            // UTC to the millisecond), once per batch rather than by SQLite's date functions per
            // row: 4% of the writer's time in a flood.
            let now = crate::event::now_timestamp();
            let created_at = now.get(..23).unwrap_or(&now);
            // The summaries' watermark: the last `honey` row, taken as it is inserted (other
            // tables written after it in the loop have rowids of their own).
            let mut honey_id = 0;
            for e in events {
                let ip = e.source_ip();
                // Formatted once, on the stack: the credential, registered and signed rows key on
                // it too.
                let (mut uuid_buf, mut node_buf) = (Uuid::encode_buffer(), Uuid::encode_buffer());
                let uuid: &str = e.uuid.hyphenated().encode_lower(&mut uuid_buf);
                let node_id: &str = e.node_id.hyphenated().encode_lower(&mut node_buf);
                insert.execute(rusqlite::params![
                    e.timestamp,
                    uuid,
                    e.collected_method.as_str(),
                    ip,
                    e.called_number,
                    e.transport.as_str(),
                    e.method,
                    e.user_agent,
                    e.message,
                    node_id,
                    match &e.origin {
                        crate::event::Origin::Local => None,
                        crate::event::Origin::Peer(p) => Some(p.as_str()),
                    },
                    e.destination.to_string(),
                    created_at,
                ])?;
                honey_id = tx.last_insert_rowid();
                let ms = timestamp_ms(&e.timestamp).unwrap_or(0);
                if let Some(a) = &e.sip_auth {
                    let digest = a.digest.as_ref();
                    tx.prepare_cached(INSERT_SIP_AUTH)?
                        .execute(rusqlite::params![
                            uuid,
                            e.timestamp,
                            ip,
                            e.method,
                            a.username,
                            digest.map(|d| d.header),
                            digest.map(|d| d.realm.as_str()),
                            digest.map(|d| d.uri.as_str()),
                            digest.map(|d| d.response.as_str()),
                            digest.is_some_and(|d| d.own_nonce),
                            digest.is_some_and(|d| d.trap_password_matched),
                            e.registered_attacker,
                        ])?;
                    let u = usernames.entry(a.username.as_str()).or_insert((
                        e.timestamp.as_str(),
                        ms,
                        0,
                    ));
                    if (e.timestamp.as_str(), ms) > (u.0, u.1) {
                        (u.0, u.1) = (e.timestamp.as_str(), ms);
                    }
                    u.2 += 1;
                }
                if e.registered_attacker {
                    tx.prepare_cached(INSERT_REGISTERED)?
                        .execute(rusqlite::params![
                            uuid,
                            e.timestamp,
                            ip,
                            e.method,
                            e.called_number,
                        ])?;
                }
                if let (Some(payload), Origin::Peer(author)) = (&e.signed, &e.origin) {
                    tx.prepare_cached(INSERT_SIGNED)?
                        .execute(rusqlite::params![uuid, author, ms, &payload[..],])?;
                }
                let author = match &e.origin {
                    Origin::Local => {
                        if self.rules.note_own(e.destination.ip()) {
                            new_own.push(e.destination.ip().to_canonical().to_string());
                        }
                        None
                    }
                    Origin::Peer(p) => Some(p.as_str()),
                };
                probes.push(super::analytics::Probe {
                    ms,
                    source: e.source.ip().to_canonical(),
                    user_agent: &e.user_agent,
                    method: &e.method,
                    called_number: &e.called_number,
                });
                sight(&mut seen.ips, &ip, &e.timestamp, ms, author);
                sight(
                    &mut seen.numbers,
                    &e.called_number,
                    &e.timestamp,
                    ms,
                    author,
                );
            }
            if self.outbox.is_some() {
                for e in events {
                    let body = serde_json::to_string(&e.to_json())
                        .map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))?;
                    super::outbox::insert(&tx, &e.uuid.hyphenated().to_string(), &body)?;
                }
            }
            seen.last_honey_id = Some(honey_id);
            seen.since = Some(started);
            took[0] = started.elapsed();
            // An address just found to be our own is unlisted after its sightings are written.
            flush = !behind
                || !new_own.is_empty()
                || self.pending.keys() + seen.keys() >= MAX_PENDING_KEYS;
            if flush {
                write_summaries(&tx, &mut self.actors, &self.rules, &self.pending, &seen)?;
            }
            for ip in &new_own {
                self.actors.unlist(&tx, Kind::Ip, ip)?;
            }
            for (username, (seen_last, ms, count)) in &usernames {
                tx.prepare_cached(UPSERT_USERNAME)?
                    .execute(rusqlite::params![username, seen_last, ms, count])?;
            }
            took[1] = started.elapsed();
            self.actors.finish(&tx)?;
            self.analytics.add(&tx, &probes)?;
            took[2] = started.elapsed();
        }
        let Some(outbox) = &self.outbox else {
            tx.commit()?;
            self.written(seen, flush);
            timing(events.len(), flush, took, started);
            self.checkpoint_if_due();
            return Ok(());
        };
        // Count the table only when the gauge says the cap may be near.
        let queued = events.len() as u64;
        let near = outbox.stats.outbox_depth.load(Ordering::Relaxed) + queued > outbox.cap;
        let overflow = if near {
            super::outbox::enforce_cap(&tx, outbox.cap)?
        } else {
            0
        };
        let depth = near.then(|| super::outbox::depth(&tx)).transpose()?;
        tx.commit()?;
        self.written(seen, flush);
        timing(events.len(), flush, took, started);
        self.checkpoint_if_due();
        let Some(outbox) = &self.outbox else {
            return Ok(());
        };
        let stats = &outbox.stats;
        match depth {
            Some(d) => stats.outbox_depth.store(d, Ordering::Relaxed),
            None => {
                stats.outbox_depth.fetch_add(queued, Ordering::Relaxed);
            }
        }
        if overflow > 0 {
            let before = stats
                .dead_lettered_outbox_full
                .fetch_add(overflow, Ordering::Relaxed);
            // Once, then every 10,000 events: a flood must not flood the log too.
            if before == 0 || before / 10_000 != (before + overflow) / 10_000 {
                tracing::warn!(
                    total = before + overflow,
                    cap = outbox.cap,
                    "WebHook outbox full: dead-lettered the oldest events."
                );
            }
        }
        let _ = outbox.wake.try_send(());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DAY_MS: i64 = 24 * 3600 * 1000;
    const T0: i64 = 1_800_000_000_000;

    fn at(ms: i64, origin: Origin, signed: Option<&[u8]>) -> Arc<Event> {
        let mut e = crate::event::tests::sample();
        e.timestamp = crate::event::format_timestamp(
            std::time::UNIX_EPOCH + Duration::from_millis(ms as u64),
        );
        e.uuid = uuid::Uuid::new_v4();
        e.destination = "198.51.100.7:5060".parse().unwrap();
        e.origin = origin;
        e.signed = signed.map(Into::into);
        Arc::new(e)
    }

    #[test]
    fn created_at_is_upstreams_default_written_once_per_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = super::super::open(&path).unwrap().writer;
        let conn = Connection::open(&path).unwrap();
        let now = "STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')";
        let before: String = conn
            .query_row(&format!("SELECT {now}"), [], |r| r.get(0))
            .unwrap();
        w.write_batch(&[at(T0, Origin::Local, None), at(T0 + 1, Origin::Local, None)])
            .unwrap();
        let after: String = conn
            .query_row(&format!("SELECT {now}"), [], |r| r.get(0))
            .unwrap();
        let rows: Vec<String> = conn
            .prepare("SELECT created_at FROM honey")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2);
        for row in &rows {
            // The default's form (UTC, milliseconds), and its time: between the two readings.
            assert_eq!(row.len(), before.len(), "{row}");
            assert!(
                *row >= before && *row <= after,
                "{before} <= {row} <= {after}"
            );
        }
    }

    #[test]
    fn peers_signed_events_are_kept_seven_days_beside_honey_and_ours_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = super::super::open(&path).unwrap().writer;
        let peer = || Origin::Peer("12D3KooWAuthor".into());
        w.write_batch(&[
            at(T0 - 8 * DAY_MS, peer(), Some(b"old")),
            at(T0 - DAY_MS, peer(), Some(b"recent")),
            at(T0, Origin::Local, None),
            at(T0, peer(), None),
        ])
        .unwrap();
        let conn = Connection::open(&path).unwrap();
        let signed = |conn: &Connection| -> Vec<(String, Vec<u8>)> {
            let mut stmt = conn
                .prepare("SELECT author, payload FROM sentrypeer_signed_events ORDER BY at_ms")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let author = "12D3KooWAuthor".to_string();
        assert_eq!(
            signed(&conn),
            [
                (author.clone(), b"old".to_vec()),
                (author.clone(), b"recent".to_vec())
            ]
        );
        let destinations: i64 = conn
            .query_row(
                "SELECT count(*) FROM honey WHERE destination_ip = '198.51.100.7:5060'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(destinations, 4);
        w.maintain(T0).unwrap();
        assert_eq!(signed(&conn), [(author, b"recent".to_vec())]);
        let honey: i64 = conn
            .query_row("SELECT count(*) FROM honey", [], |r| r.get(0))
            .unwrap();
        assert_eq!(honey, 4, "the events themselves stay");
    }

    fn tried(ms: i64, username: &str, registered: bool) -> Arc<Event> {
        let mut e = (*at(ms, Origin::Local, None)).clone();
        e.method = "REGISTER".into();
        e.sip_auth = Some(Box::new(crate::event::SipAuth {
            username: username.into(),
            digest: Some(crate::event::DigestAttempt {
                header: "Authorization",
                realm: "asterisk".into(),
                uri: "sip:192.0.2.1".into(),
                response: "0123456789abcdef0123456789abcdef".into(),
                own_nonce: true,
                trap_password_matched: registered,
            }),
        }));
        e.registered_attacker = registered;
        Arc::new(e)
    }

    #[test]
    fn batches_written_behind_a_backlog_reach_the_summaries_at_upkeep_or_a_batch_with_none_behind()
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = super::super::open(&path).unwrap().writer;
        let conn = Connection::open(&path).unwrap();
        let summary = |number: &str| -> (Option<i64>, i64, i64) {
            conn.query_row(
                "SELECT (SELECT seen_count FROM sentrypeer_numbers WHERE called_number = ?1),
                        (SELECT count(*) FROM honey),
                        (SELECT coalesce(last_honey_id, 0) FROM sentrypeer_summary_state)",
                [number],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
        };
        let numbered = |n: &str| {
            let mut e = (*at(T0, Origin::Local, None)).clone();
            e.called_number = n.into();
            Arc::new(e)
        };
        w.write_batch(&[numbered("100")]).unwrap();
        assert_eq!(summary("100"), (Some(1), 1, 1));
        // Behind: the events are written, the summaries and the watermark wait.
        w.write_batch_behind(&[numbered("100"), numbered("200")])
            .unwrap();
        w.write_batch_behind(&[numbered("200")]).unwrap();
        assert_eq!(summary("100"), (Some(1), 4, 1));
        assert_eq!(summary("200"), (None, 4, 1));
        // A batch with nothing behind it writes them all, its own too, each counted once.
        w.write_batch(&[numbered("200")]).unwrap();
        assert_eq!(summary("100"), (Some(2), 5, 5));
        assert_eq!(summary("200"), (Some(3), 5, 5));
        // The upkeep tick writes what waits.
        w.write_batch_behind(&[numbered("300")]).unwrap();
        assert_eq!(summary("300"), (None, 6, 5));
        w.maintain(T0).unwrap();
        assert_eq!(summary("300"), (Some(1), 6, 6));
        // So does a clean stop.
        w.write_batch_behind(&[numbered("400")]).unwrap();
        drop(w);
        assert_eq!(summary("400"), (Some(1), 7, 7));
        let opened = super::super::open(&path).unwrap();
        assert_eq!(opened.summarised, 0);
    }

    /// A writer that wrote one event with its summaries and two behind a backlog (pending).
    fn one_summarised_two_pending(path: &std::path::Path) -> Writer {
        let mut w = super::super::open(path).unwrap().writer;
        w.write_batch(&[at(T0, Origin::Local, None)]).unwrap();
        w.write_batch_behind(&[
            at(T0 + 1, Origin::Local, None),
            at(T0 + 2, Origin::Local, None),
        ])
        .unwrap();
        w
    }

    #[test]
    fn sightings_pending_at_a_crash_are_folded_in_when_the_file_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = one_summarised_two_pending(&path);
        // A crash: what the writer held is gone.
        w.pending = Sightings::default();
        drop(w);
        let opened = super::super::open(&path).unwrap();
        assert_eq!(opened.summarised, 2);
        let conn = Connection::open(&path).unwrap();
        let n = crate::event::tests::sample().called_number;
        let count: i64 = conn
            .query_row(
                "SELECT seen_count FROM sentrypeer_numbers WHERE called_number = ?1",
                [n],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(count, 3);
    }

    #[test]
    fn opening_the_file_beside_a_live_writer_never_counts_its_pending_sightings_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = one_summarised_two_pending(&path);
        // `sentrypeer export` beside the running node.
        super::super::open_for_reading(&path).unwrap();
        w.flush_summaries().unwrap();
        let conn = Connection::open(&path).unwrap();
        let count: i64 = conn
            .query_row("SELECT sum(seen_count) FROM sentrypeer_numbers", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(count, 3);
    }

    #[test]
    fn the_summaries_watermark_is_the_last_honey_row_whatever_else_the_batch_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = super::super::open(&path).unwrap().writer;
        for _ in 0..3 {
            // Ends with an event that also writes a credential row and a registered event.
            w.write_batch(&[at(T0, Origin::Local, None), tried(T0, "admin", true)])
                .unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        let (watermark, last): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT last_honey_id FROM sentrypeer_summary_state),
                        (SELECT max(honey_id) FROM honey)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(watermark, last);
        drop(w);
        // Reopened, nothing is summarised twice.
        let opened = super::super::open(&path).unwrap();
        assert_eq!(opened.summarised, 0);
    }

    #[test]
    fn credentials_usernames_and_registered_events_are_written_and_pruned_with_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = super::super::open(&path).unwrap().writer;
        w.write_batch(&[
            tried(T0 - 8 * DAY_MS, "100", false),
            tried(T0 - DAY_MS, "100", false),
            tried(T0, "admin", true),
            at(T0, Origin::Local, None),
        ])
        .unwrap();
        let conn = Connection::open(&path).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT count(*) FROM sentrypeer_sip_auth"), 3);
        assert_eq!(
            count(
                "SELECT count(*) FROM sentrypeer_sip_auth WHERE trap_password_matched AND registered_attacker AND own_nonce AND username = 'admin'"
            ),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM sentrypeer_registered_events"),
            1
        );
        let usernames = |conn: &Connection| -> Vec<(String, i64)> {
            let mut stmt = conn
                .prepare("SELECT username, seen_count FROM sentrypeer_usernames ORDER BY username")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(
            usernames(&conn),
            [("100".to_string(), 2), ("admin".to_string(), 1)]
        );
        let newest: String = conn
            .query_row(
                "SELECT seen_last FROM sentrypeer_usernames WHERE username = '100'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(newest, tried(T0 - DAY_MS, "100", false).timestamp);

        // Retention takes the per-event rows with their events; the summary keeps its count.
        assert_eq!(w.prune_before(T0 - 7 * DAY_MS).unwrap(), 1);
        assert_eq!(count("SELECT count(*) FROM sentrypeer_sip_auth"), 2);
        assert_eq!(
            usernames(&conn),
            [("100".to_string(), 2), ("admin".to_string(), 1)]
        );
    }
}
