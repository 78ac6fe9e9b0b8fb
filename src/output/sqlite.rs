//! Writes events to the database: one thread, one connection, one transaction per batch.
//! A failing batch is retried (a locked or full disk may recover) before it is counted as failed.
//! Between batches, and at least once a second when idle, the writer does the bad-actor set's
//! upkeep (listings whose time is up, a re-evaluation after the rule changed). The summaries
//! are written with a small batch, and at most every `SUMMARY_LAG` during a stream of big
//! ones; while events wait behind the batch in hand, at that upkeep.

use std::sync::Arc;
use std::time::Duration;

use super::{BatchSink, BuildContext, BuildError, OnThread, Output, OutputConfig, QueuePolicy};
use crate::event::Event;
use crate::store::Writer;

/// Attempts per batch before it is given up and counted as failed.
const WRITE_ATTEMPTS: u32 = 8;
/// First pause between attempts; doubles each time (about 25 s in all).
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The most events written in one transaction. A bigger batch changes each page of the
/// summaries once for more events (4,096 to 16,384 halves the bytes written per event with
/// 250,000 distinct numbers); a writer that keeps up takes far fewer. Bounded so the batch in
/// hand and the queue's byte budget stay within the memory target.
const MAX_BATCH: usize = 8192;
/// How often the bad-actor set's upkeep runs: an expired listing is announced as removed
/// within this long of its expiry.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);
/// While events keep coming, the least time between two transactions: a stream of probes is
/// written in batches of hundreds, not of tens (each commit writes the pages it changed,
/// wherever in them the batch's rows fell: the analytics buckets, `honey`'s tail). Events
/// wait at most this long in the queue before their transaction starts.
const BATCH_GAP: Duration = Duration::from_millis(10);
/// A batch this big is part of a stream: its sightings join the pending ones until those have
/// waited `SUMMARY_LAG`; a smaller batch writes the summaries with it, so a handful of probes
/// is in the lookups as soon as it is in `honey`. Once batches hold thousands of distinct
/// numbers, each write of the summaries changes nearly every page of them (table and list
/// index) and the commit copies each such page to the WAL: written once per `SUMMARY_LAG`
/// instead of once a batch, a stream costs a fraction of the bytes.
const STREAM_BATCH: usize = 256;
/// The longest a sighting in a stream of big batches waits for the summaries (and lookups)
/// while the writer keeps up: the next batch writes them, or the output wakes for them when
/// the stream has stopped (`BatchSink::due_in`).
const SUMMARY_LAG: Duration = Duration::from_millis(250);

/// The database output is always on; its file (`-f`) is opened before the outputs are built,
/// since the API, the peers and the WebHook read it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteConfig;

impl OutputConfig for SqliteConfig {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn queue(&self) -> Option<QueuePolicy> {
        Some(QueuePolicy::every(super::DATABASE_QUEUE_EVENTS))
    }

    fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Output>, BuildError> {
        let writer = cx
            .writer
            .take()
            .ok_or_else(|| BuildError::Other("the database writer is already taken".into()))?;
        Ok(Box::new(OnThread(Database::new(writer))))
    }
}

struct Database {
    writer: Writer,
    /// Whether events wait behind the batch in hand: then the summaries are written once a
    /// second rather than with every batch (see `Writer::write_batch_behind`).
    behind: bool,
    /// `SUMMARY_LAG`; shorter or longer in tests.
    summary_lag: Duration,
    /// Writing the deferred summaries failed: left to the next upkeep, which retries.
    catch_up_failed: bool,
}

impl Database {
    fn new(writer: Writer) -> Self {
        Self {
            writer,
            behind: false,
            summary_lag: SUMMARY_LAG,
            catch_up_failed: false,
        }
    }

    /// Whether this batch's sightings wait for a later write of the summaries: behind a
    /// backlog, or in a stream of big batches until the oldest pending has waited
    /// `SUMMARY_LAG`.
    fn defer_summaries(&self, batch: usize) -> bool {
        self.behind
            || (batch >= STREAM_BATCH
                && self
                    .writer
                    .pending_age()
                    .is_none_or(|waited| waited < self.summary_lag))
    }
}

impl BatchSink for Database {
    fn write(&mut self, batch: &[Arc<Event>]) -> Result<(), String> {
        let mut pause = FIRST_RETRY_PAUSE;
        let mut attempt = 1;
        loop {
            let written = if self.defer_summaries(batch.len()) {
                self.writer.write_batch_behind(batch)
            } else {
                self.writer.write_batch(batch)
            };
            match written {
                Ok(()) => return Ok(()),
                Err(e) if attempt < WRITE_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "Database write failed; retrying.");
                    #[allow(clippy::disallowed_methods)] // this output owns its thread
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn batch_gap(&self) -> Duration {
        BATCH_GAP
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(UPKEEP_EVERY)
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn behind(&mut self, waiting: u64) {
        self.behind = waiting > 0;
    }

    fn tick(&mut self) {
        self.catch_up_failed = false;
        if let Err(error) = self.writer.maintain(crate::actors::now_ms()) {
            tracing::warn!(%error, "Bad-actor upkeep failed; trying again in a second.");
        }
    }

    /// A stream that stops leaves its last sightings pending: they are written once the
    /// oldest has waited `SUMMARY_LAG`, not at the next upkeep. Behind a backlog, at the
    /// upkeep as before (batches keep coming then).
    fn due_in(&self) -> Option<Duration> {
        if self.catch_up_failed {
            return None;
        }
        let waited = self.writer.pending_age()?;
        Some(self.summary_lag.saturating_sub(waited))
    }

    fn catch_up(&mut self) {
        if let Err(error) = self.writer.flush_summaries() {
            tracing::warn!(%error, "Writing the summaries failed; trying again at the upkeep.");
            self.catch_up_failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn probes(n: usize, number: &str) -> Vec<Arc<Event>> {
        (0..n)
            .map(|_| {
                let mut e = crate::event::tests::sample();
                e.uuid = uuid::Uuid::new_v4();
                e.called_number = number.into();
                Arc::new(e)
            })
            .collect()
    }

    /// Rows in `honey`, and the summary's count of `number` (`None`: not in the summaries).
    fn rows_and_summary(conn: &Connection, number: &str) -> (i64, Option<i64>) {
        conn.query_row(
            "SELECT (SELECT count(*) FROM honey),
                    (SELECT seen_count FROM sentrypeer_numbers WHERE called_number = ?1)",
            [number],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    fn sink(dir: &tempfile::TempDir, lag: Duration) -> (Database, Connection) {
        let path = dir.path().join("t.db");
        let writer = crate::store::open(&path).unwrap().writer;
        let mut db = Database::new(writer);
        db.summary_lag = lag;
        (db, Connection::open(&path).unwrap())
    }

    #[test]
    fn a_small_batch_is_in_the_summaries_with_its_rows_and_brings_a_stream_s_pending_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut db, conn) = sink(&dir, Duration::MAX);
        db.write(&probes(3, "100")).unwrap();
        assert_eq!(rows_and_summary(&conn, "100"), (3, Some(3)));

        db.write(&probes(STREAM_BATCH, "200")).unwrap();
        assert_eq!(
            rows_and_summary(&conn, "200"),
            (3 + 256, None),
            "a stream's batch waits"
        );
        db.write(&probes(1, "200")).unwrap();
        assert_eq!(rows_and_summary(&conn, "200"), (3 + 257, Some(257)));
    }

    #[test]
    fn a_stream_of_big_batches_writes_the_summaries_once_the_oldest_sighting_has_waited() {
        let dir = tempfile::tempdir().unwrap();
        // Every pending sighting has waited long enough: the second batch writes both.
        let (mut db, conn) = sink(&dir, Duration::ZERO);
        db.write(&probes(STREAM_BATCH, "300")).unwrap();
        assert_eq!(rows_and_summary(&conn, "300"), (256, None));
        db.write(&probes(STREAM_BATCH, "300")).unwrap();
        assert_eq!(rows_and_summary(&conn, "300"), (512, Some(512)));
    }

    #[test]
    fn sightings_a_stream_left_pending_reach_the_summaries_at_the_upkeep() {
        let dir = tempfile::tempdir().unwrap();
        let (mut db, conn) = sink(&dir, Duration::MAX);
        db.write(&probes(STREAM_BATCH, "400")).unwrap();
        assert_eq!(rows_and_summary(&conn, "400"), (256, None));
        db.tick();
        assert_eq!(rows_and_summary(&conn, "400"), (256, Some(256)));
    }

    #[test]
    fn sightings_a_stream_left_pending_are_due_within_the_lag_and_written_by_catching_up() {
        let dir = tempfile::tempdir().unwrap();
        let (mut db, conn) = sink(&dir, Duration::from_secs(3600));
        assert_eq!(db.due_in(), None, "nothing pending");
        db.write(&probes(STREAM_BATCH, "500")).unwrap();
        let due = db.due_in().expect("pending sightings are due");
        assert!(due > Duration::from_secs(3500) && due <= Duration::from_secs(3600));
        db.catch_up();
        assert_eq!(rows_and_summary(&conn, "500"), (256, Some(256)));
        assert_eq!(db.due_in(), None);
    }
}
