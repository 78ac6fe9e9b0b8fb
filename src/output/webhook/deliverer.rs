//! The outbox state machine: reads due rows (never one twice while it is claimed), sends them
//! with at most `MAX_IN_FLIGHT` requests at once (one while failing), and records each
//! request's end in the outbox: delivered rows deleted in batches (acks), failed ones
//! rescheduled after the pause, refused ones dead-lettered, the dead letters pruned to their
//! cap. Stops when the writer is gone and what is due is delivered, or after `DRAIN_GRACE`.
//!
//! Must not depend on HTTP: the endpoint answers each request with an `Outcome`, and `retry`
//! says how long to pause. Talks to the database only through `store::outbox`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;

use super::endpoint::Outcome;
use super::retry::{pause_after, random_unit};
use super::{DRAIN_GRACE, Deliverer, MAX_IN_FLIGHT};
use crate::metrics::WebhookStats;
use crate::store::outbox::{self, Pending};

/// Rows read from the outbox at once.
const FETCH_ROWS: usize = 512;
/// Delivered rows deleted in one transaction. At most this many (plus what is in flight) are
/// sent twice after a crash; fewer transactions leave the database to the capture writer.
const ACK_BATCH: usize = 256;
/// The longest a delivered row waits for its deletion.
const ACK_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// How often the outbox is read even without a wake-up: picks up rows another process put
/// there (`sentrypeer webhook replay`) and recounts the depth gauge.
const RECHECK_INTERVAL: Duration = Duration::from_secs(2);

/// One request in flight: its events, and the failure round it started in.
struct Request {
    ids: Vec<i64>,
    generation: u64,
}

/// One request's events and how it ended.
struct Done {
    ids: Vec<i64>,
    generation: u64,
    outcome: Outcome,
}

/// Counts a request in flight while it lives (an aborted request too).
struct InFlight(Arc<WebhookStats>);

impl InFlight {
    fn new(stats: Arc<WebhookStats>) -> InFlight {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(stats)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The deliverer's loop state.
pub(super) struct State {
    d: Deliverer,
    /// `None` once the writer has stopped.
    wake: Option<mpsc::Receiver<()>>,
    /// Due rows read but not yet sent, oldest first.
    pending: VecDeque<Pending>,
    /// Rows pending, in flight or delivered but not yet deleted: never read twice.
    claimed: HashSet<i64>,
    /// Reading resumes after this id; 0 starts from the oldest row again.
    cursor: i64,
    /// The last read found nothing more due: wait for a wake-up, a timer or a recheck.
    exhausted: bool,
    /// When the next row not yet due becomes due.
    next_due: Option<Instant>,
    /// The requests' tasks, and each task's events by its id: a task that fails (panics)
    /// returns no `Done`, but its events must still be released and retried.
    in_flight: JoinSet<Outcome>,
    requests: HashMap<tokio::task::Id, Request>,
    /// Delivered rows to delete, and by when.
    acks: Vec<i64>,
    ack_by: Option<Instant>,
    /// Consecutive failures; while above 0 only one request probes the endpoint.
    failures: u32,
    /// Bumped at each failure counted, so the other requests of that round count no more.
    generation: u64,
    paused_until: Option<Instant>,
    recheck_at: Instant,
    /// Set when the writer has stopped: deliver what is due until then.
    drain_until: Option<Instant>,
}

impl State {
    pub(super) fn new(d: Deliverer, wake: mpsc::Receiver<()>) -> State {
        State {
            d,
            wake: Some(wake),
            pending: VecDeque::new(),
            claimed: HashSet::new(),
            cursor: 0,
            exhausted: false,
            next_due: None,
            in_flight: JoinSet::new(),
            requests: HashMap::new(),
            acks: Vec::new(),
            ack_by: None,
            failures: 0,
            generation: 0,
            paused_until: None,
            recheck_at: Instant::now() + RECHECK_INTERVAL,
            drain_until: None,
        }
    }

    pub(super) async fn run(&mut self) {
        loop {
            let now = Instant::now();
            if self.paused_until.is_some_and(|t| t <= now) {
                self.paused_until = None;
                self.exhausted = false;
            }
            if self.next_due.is_some_and(|t| t <= now) {
                self.next_due = None;
                self.exhausted = false;
            }
            self.dispatch().await;
            if let Some(until) = self.drain_until {
                let idle = self.in_flight.is_empty() && self.pending.is_empty() && self.exhausted;
                if idle || now >= until || self.paused_until.is_some() {
                    break;
                }
            }
            let flush_now = self.acks.len() >= ACK_BATCH
                || (!self.acks.is_empty() && self.in_flight.is_empty())
                || self.ack_by.is_some_and(|t| t <= now);
            if flush_now {
                self.flush_acks().await;
            }
            let mut timer = self.recheck_at;
            for t in [self.paused_until, self.ack_by, self.drain_until]
                .into_iter()
                .chain([self.next_due.filter(|_| self.exhausted)])
                .flatten()
            {
                timer = timer.min(t);
            }
            tokio::select! {
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    self.joined(joined).await;
                }
                woken = recv(&mut self.wake), if self.wake.is_some() => {
                    self.exhausted = false;
                    if woken.is_none() {
                        self.wake = None;
                        self.drain_until = Some(Instant::now() + DRAIN_GRACE);
                    }
                }
                () = tokio::time::sleep_until(timer) => {
                    if Instant::now() >= self.recheck_at {
                        self.recheck().await;
                    }
                }
            }
        }
        self.flush_acks().await;
        // Dropping the join set aborts what is still in flight: those rows stay in the outbox.
        self.in_flight.abort_all();
        self.requests.clear();
        let left = self.d.stats.outbox_depth.load(Ordering::Relaxed);
        if left > 0 {
            tracing::info!(
                events = left,
                "WebHook deliverer stopped; undelivered events stay in the outbox for the next start."
            );
        } else {
            tracing::debug!("WebHook deliverer stopped with an empty outbox.");
        }
    }

    /// Starts requests while there is room and due rows.
    async fn dispatch(&mut self) {
        let room = if self.failures > 0 { 1 } else { MAX_IN_FLIGHT };
        while self.paused_until.is_none() && self.in_flight.len() < room {
            if self.pending.is_empty() && !self.exhausted {
                self.refill().await;
            }
            if self.pending.is_empty() {
                break;
            }
            let n = self.d.batch.min(self.pending.len());
            let rows: Vec<Pending> = self.pending.drain(..n).collect();
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let body = if self.d.batch == 1 {
                Bytes::from(rows.into_iter().map(|r| r.body).collect::<String>())
            } else {
                let mut b =
                    String::with_capacity(rows.iter().map(|r| r.body.len() + 1).sum::<usize>() + 2);
                b.push('[');
                for (i, r) in rows.iter().enumerate() {
                    if i > 0 {
                        b.push(',');
                    }
                    b.push_str(&r.body);
                }
                b.push(']');
                Bytes::from(b)
            };
            let endpoint = self.d.endpoint.clone();
            let guard = InFlight::new(self.d.stats.clone());
            self.spawn_request(ids, async move {
                let outcome = endpoint.deliver(body).await;
                drop(guard);
                outcome
            });
        }
    }

    /// Starts one request for `ids`, remembering them by the task's id.
    fn spawn_request(
        &mut self,
        ids: Vec<i64>,
        request: impl Future<Output = Outcome> + Send + 'static,
    ) -> AbortHandle {
        let handle = self.in_flight.spawn(request);
        let generation = self.generation;
        self.requests
            .insert(handle.id(), Request { ids, generation });
        handle
    }

    /// Settles a request whose task ended. One that panicked (or was cancelled) counts as a
    /// failed attempt: its events are rescheduled and released, and backoff applies.
    async fn joined(&mut self, joined: Result<(tokio::task::Id, Outcome), JoinError>) {
        let (id, outcome) = match joined {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e, "A WebHook request task failed; its events will be retried.");
                let error = if e.is_panic() {
                    "request task panicked"
                } else {
                    "request task cancelled"
                };
                let outcome = Outcome::Retry {
                    error: error.into(),
                    retry_after: None,
                };
                (e.id(), outcome)
            }
        };
        match self.requests.remove(&id) {
            Some(Request { ids, generation }) => {
                self.finished(Done {
                    ids,
                    generation,
                    outcome,
                })
                .await;
            }
            None => tracing::warn!("A WebHook request ended that was not tracked."),
        }
    }

    /// Reads the next due rows that are not already claimed.
    async fn refill(&mut self) {
        loop {
            let (cursor, db) = (self.cursor, self.d.db.clone());
            let read = blocking(move || {
                let conn = lock(&db);
                let now = outbox::now_ms();
                let rows = outbox::due(&conn, now, cursor, FETCH_ROWS)?;
                let next = if rows.len() < FETCH_ROWS {
                    outbox::next_due_after(&conn, now)?
                } else {
                    None
                };
                Ok((rows, next, now))
            })
            .await;
            let (rows, next, now_ms) = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read the WebHook outbox.");
                    self.exhausted = true;
                    return;
                }
            };
            let full = rows.len() == FETCH_ROWS;
            self.cursor = if full {
                rows.last().map_or(0, |r| r.id)
            } else {
                0
            };
            for r in rows {
                if self.claimed.insert(r.id) {
                    self.pending.push_back(r);
                }
            }
            if !full {
                self.exhausted = true;
                self.next_due = next.map(|at| {
                    Instant::now() + Duration::from_millis(at.saturating_sub(now_ms) as u64)
                });
                return;
            }
            if !self.pending.is_empty() {
                return;
            }
        }
    }

    async fn finished(&mut self, done: Done) {
        let n = done.ids.len() as u64;
        let stats = self.d.stats.clone();
        match done.outcome {
            Outcome::Delivered => {
                stats.delivered.fetch_add(n, Ordering::Relaxed);
                if self.failures > 0 {
                    tracing::info!(
                        failures = self.failures,
                        "WebHook endpoint answers again; delivering the outbox."
                    );
                    self.failures = 0;
                    stats.consecutive_failures.store(0, Ordering::Relaxed);
                }
                self.acks.extend(done.ids);
                self.ack_by
                    .get_or_insert_with(|| Instant::now() + ACK_FLUSH_INTERVAL);
            }
            Outcome::Retry { error, retry_after } => {
                stats.retried.fetch_add(n, Ordering::Relaxed);
                stats.set_last_error(&error);
                let now = Instant::now();
                if done.generation == self.generation {
                    self.generation += 1;
                    self.failures = self.failures.saturating_add(1);
                    stats
                        .consecutive_failures
                        .store(self.failures.into(), Ordering::Relaxed);
                    let pause = pause_after(
                        retry_after,
                        self.failures,
                        self.d.max_backoff,
                        random_unit(),
                    );
                    self.paused_until = Some(now + pause);
                    if self.failures == 1 {
                        tracing::warn!(%error, pause_ms = pause.as_millis() as u64, "WebHook delivery failed; retrying with backoff.");
                    } else {
                        tracing::debug!(%error, failures = self.failures, pause_ms = pause.as_millis() as u64, "WebHook delivery failed again.");
                    }
                } else if let Some(asked) = retry_after {
                    let until = now + asked;
                    self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
                }
                let wait = self.paused_until.map_or(Duration::ZERO, |p| p - now);
                let next_attempt = outbox::now_ms() + wait.as_millis() as i64;
                let (db, ids) = (self.d.db.clone(), done.ids.clone());
                let result = blocking(move || {
                    let mut conn = lock(&db);
                    outbox::reschedule(&mut conn, &ids, next_attempt, &error)
                })
                .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "Cannot record a WebHook retry in the outbox.");
                }
                self.release(&done.ids);
                // Resume with the oldest rows after the pause.
                for r in self.pending.drain(..) {
                    self.claimed.remove(&r.id);
                }
                self.cursor = 0;
                self.exhausted = false;
            }
            Outcome::Reject(why) => {
                stats.set_last_error(&why.reason);
                let (db, ids, why2) = (self.d.db.clone(), done.ids.clone(), why.clone());
                let result = blocking(move || {
                    let mut conn = lock(&db);
                    outbox::dead_letter(&mut conn, &ids, &why2)
                })
                .await;
                match result {
                    Ok(moved) => {
                        let before = stats.dead_lettered.fetch_add(moved, Ordering::Relaxed);
                        let _ = stats.outbox_depth.fetch_update(
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                            |d| Some(d.saturating_sub(moved)),
                        );
                        // Once, then every 1,000 events.
                        if before == 0 || before / 1000 != (before + moved) / 1000 {
                            tracing::warn!(status = ?why.status, total = before + moved, "WebHook endpoint refused events; they are in the dead letters (sentrypeer webhook dead-letters).");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Cannot dead-letter WebHook events."),
                }
                self.release(&done.ids);
                self.prune_dead_letters().await;
            }
        }
    }

    /// Deletes delivered rows from the outbox.
    async fn flush_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.acks);
        self.ack_by = None;
        let (db, ids2) = (self.d.db.clone(), ids.clone());
        let result = blocking(move || {
            let mut conn = lock(&db);
            outbox::delete(&mut conn, &ids2)
        })
        .await;
        match result {
            Ok(deleted) => {
                let _ = self.d.stats.outbox_depth.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |d| Some(d.saturating_sub(deleted)),
                );
                self.release(&ids);
            }
            Err(e) => {
                // Keep them claimed (not sent again) and try the deletion later.
                tracing::warn!(error = %e, "Cannot delete delivered WebHook events; will retry.");
                self.acks = ids;
                self.ack_by = Some(Instant::now() + ACK_FLUSH_INTERVAL);
            }
        }
    }

    /// Recounts the outbox and reads it again: rows may have come from another process.
    async fn recheck(&mut self) {
        self.recheck_at = Instant::now() + RECHECK_INTERVAL;
        self.exhausted = false;
        let db = self.d.db.clone();
        match blocking(move || {
            let conn = lock(&db);
            outbox::depth_and_retrying(&conn)
        })
        .await
        {
            Ok((depth, retrying)) => {
                self.d.stats.outbox_depth.store(depth, Ordering::Relaxed);
                self.d.stats.retrying.store(retrying, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "Cannot count the WebHook outbox."),
        }
        // The writer dead-letters what a full outbox pushes out: the cap is kept from here.
        self.prune_dead_letters().await;
    }

    /// Deletes the oldest dead letters beyond the cap, and counts them.
    async fn prune_dead_letters(&mut self) {
        let (db, cap) = (self.d.db.clone(), self.d.dead_letter_cap);
        let result = blocking(move || {
            let mut conn = lock(&db);
            outbox::prune_dead_letters(&mut conn, cap)
        })
        .await;
        match result {
            Ok(0) => {}
            Ok(pruned) => {
                let before = self
                    .d
                    .stats
                    .dead_letters_pruned
                    .fetch_add(pruned, Ordering::Relaxed);
                // Once, then every 10,000 events.
                if before == 0 || before / 10_000 != (before + pruned) / 10_000 {
                    tracing::warn!(
                        total = before + pruned,
                        cap,
                        "WebHook dead letters over their cap (--webhook-dead-letter-cap): deleted the oldest."
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "Cannot prune the WebHook dead letters."),
        }
    }

    fn release(&mut self, ids: &[i64]) {
        for id in ids {
            self.claimed.remove(id);
        }
    }
}

/// Waits for a wake-up; `None` when the writer is gone.
async fn recv(wake: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match wake {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The deliverer's connection. A panic while it was held leaves it usable: every change is
/// one transaction, rolled back if unfinished.
fn lock(db: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    db.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a database call off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::webhook::WebhookConfig;

    /// A deliverer on a fresh database holding `rows` outbox rows, with an endpoint nobody
    /// listens on (these tests start no real request).
    fn state_with_rows(dir: &tempfile::TempDir, rows: usize) -> (State, Arc<WebhookStats>) {
        let path = dir.path().join("webhook.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(outbox::SCHEMA).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..rows {
            outbox::insert(&tx, &format!("uuid-{i}"), "{}").unwrap();
        }
        tx.commit().unwrap();
        let config = WebhookConfig {
            url: "http://127.0.0.1:9/events".into(),
            oauth2: None,
            authorization: None,
            batch: 1,
            outbox_cap: 100,
            dead_letter_cap: 100,
            max_backoff: Duration::from_secs(60),
        };
        let stats = Arc::new(WebhookStats::new(100));
        let d = Deliverer::new(&config, &path, stats.clone()).unwrap();
        let (_wake, woken) = mpsc::channel(1);
        (State::new(d, woken), stats)
    }

    #[tokio::test]
    async fn a_request_task_that_panics_or_is_cancelled_has_its_rows_released_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, stats) = state_with_rows(&dir, 3);
        s.refill().await;
        let ids: Vec<i64> = s.pending.drain(..2).map(|r| r.id).collect();
        assert_eq!(s.claimed.len(), 3);
        s.spawn_request(vec![ids[0]], async { panic!("a bug in a request task") });
        let never = s.spawn_request(vec![ids[1]], std::future::pending());
        never.abort();
        assert_eq!(s.requests.len(), 2);
        while let Some(joined) = s.in_flight.join_next_with_id().await {
            assert!(joined.is_err());
            s.joined(joined).await;
        }
        assert!(s.requests.is_empty());
        // Released (the pending row too: reading resumes from the oldest after the pause).
        assert!(s.claimed.is_empty() && s.pending.is_empty());
        // One failure round (both started in it), with backoff.
        assert_eq!(s.failures, 1);
        assert!(s.paused_until.is_some());
        assert_eq!(stats.retried.load(Ordering::SeqCst), 2);
        let last = stats.last_error().unwrap();
        assert!(last.starts_with("request task "), "{last}");
        let conn = lock(&s.d.db);
        let mut stmt = conn
            .prepare("SELECT id, attempts, last_error FROM sentrypeer_webhook_outbox ORDER BY id")
            .unwrap();
        let rows: Vec<(i64, i64, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (ids[0], 1, Some("request task panicked".into())),
                (ids[1], 1, Some("request task cancelled".into())),
                (ids[1] + 1, 0, None),
            ]
        );
    }
}
