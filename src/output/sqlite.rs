//! Writes events to the database: one thread, one connection, one transaction per batch.
//! A failing batch is retried (a locked or full disk may recover) before it is counted as failed.
//! Between batches, and at least once a second when idle, the writer does the bad-actor set's
//! upkeep (listings whose time is up, a re-evaluation after the rule changed). While events
//! wait behind the batch in hand, the summaries are written at that upkeep instead of with
//! every batch.

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
        Ok(Box::new(OnThread(Database {
            writer,
            behind: false,
        })))
    }
}

struct Database {
    writer: Writer,
    /// Whether events wait behind the batch in hand: then the summaries are written once a
    /// second rather than with every batch (see `Writer::write_batch_behind`).
    behind: bool,
}

impl BatchSink for Database {
    fn write(&mut self, batch: &[Arc<Event>]) -> Result<(), String> {
        let mut pause = FIRST_RETRY_PAUSE;
        let mut attempt = 1;
        loop {
            let written = if self.behind {
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
        if let Err(error) = self.writer.maintain(crate::actors::now_ms()) {
            tracing::warn!(%error, "Bad-actor upkeep failed; trying again in a second.");
        }
    }
}
