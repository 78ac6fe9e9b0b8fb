//! Moves WAL checkpoints off the writer's thread: the writer never checkpoints on its own
//! (its `wal_autocheckpoint` is 0); this thread copies the WAL into the database on its own
//! connection, in parallel, and a final TRUNCATE checkpoint when the writer is dropped leaves
//! a tidy database file behind.
//!
//! A WAL starts over from its beginning only once every frame in it has been copied, and new
//! frames keep coming while the writer writes, so under a steady stream this thread's copies
//! never finish the WAL. When it has outgrown its bound, this thread asks the writer to finish
//! the copy itself between two transactions ([`Checkpointer::wal_restart_due`]): the few frames
//! this thread has not yet copied, tens of milliseconds, after which the writer's next
//! transaction starts the WAL over. (A RESTART checkpoint from this thread did the same while
//! holding the writer's lock, and waited in SQLite's busy handler for the writer and the
//! readers: 0.2 to 3 s with the writer stopped, when the database queue holds about half a
//! second of a 50,000/s stream.)

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often pending WAL frames are copied into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// A WAL holding more than this many bytes of frames is started over (by the writer, see the
/// module's documentation); keeps the WAL file bounded under a sustained flood. Each start
/// over holds the writer up for its copy and two fsyncs: 20-70 ms, but 240 ms seen on a busy
/// disk, which with the batch behind it was more than the database queue's half second at
/// 50,000 probes/s. At 64 MiB that was one and a half times a second in such a stream (the
/// summaries rewrite their pages four times a second); a bound four times larger makes them
/// four times rarer, for a WAL file that may reach this size (kept at it: `WAL_KEPT_BYTES`).
const WAL_RESTART_BYTES: i64 = 256 * 1024 * 1024;
/// The size the WAL file is cut back to when it starts over (`journal_size_limit`): above
/// what it reaches in a flood before the writer starts it over, so that a flood never
/// truncates it. Cutting it back to 64 MiB each time made the writer's first commit after
/// each start over take 80 ms (300 ms at worst) instead of 3. The final checkpoint, when the
/// node stops, leaves it empty.
pub(super) const WAL_KEPT_BYTES: i64 = 2 * WAL_RESTART_BYTES;

/// Runs checkpoints until dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Set by the thread when the WAL has outgrown its bound; taken by the writer.
    restart_due: Arc<AtomicBool>,
}

impl Checkpointer {
    pub(super) fn spawn(db: &Path) -> std::io::Result<Self> {
        Self::spawn_bounded(db, WAL_RESTART_BYTES)
    }

    /// With the WAL's bound given (the tests' is small).
    fn spawn_bounded(db: &Path, wal_bytes: i64) -> std::io::Result<Self> {
        let (stop, rx) = mpsc::channel::<()>();
        let db = db.to_path_buf();
        let restart_due = Arc::new(AtomicBool::new(false));
        let due = restart_due.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&db, &rx, &due, wal_bytes))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
            restart_due,
        })
    }

    /// Whether the writer should finish a checkpoint between its transactions, so that its
    /// next one starts the WAL over. Returns true once per request.
    pub(super) fn wal_restart_due(&self) -> bool {
        self.restart_due.swap(false, Ordering::Relaxed)
    }
}

/// The checkpoint a writer runs between its transactions when asked
/// ([`Checkpointer::wal_restart_due`]): it copies what is left of the WAL and returns without
/// waiting for anyone (PASSIVE); with nothing written meanwhile, the writer's next transaction
/// starts the WAL over. Errors are the writer's to ignore: the next request tries again.
pub(super) fn finish_checkpoint(conn: &Connection) {
    let started = std::time::Instant::now();
    match checkpoint(conn, "PASSIVE") {
        Ok((frames, copied)) => {
            tracing::trace!(took = ?started.elapsed(), frames, copied, "WAL copied by the writer.");
        }
        Err(error) => tracing::debug!(%error, "The writer's checkpoint did not complete."),
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: &Path, stop: &mpsc::Receiver<()>, restart_due: &AtomicBool, wal_bytes: i64) {
    let conn = match Connection::open(db)
        .and_then(|c| c.busy_timeout(super::BUSY_TIMEOUT).map(|_| c))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "Checkpoint connection failed; the WAL will grow until restart.");
            return;
        }
    };
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap_or(4096);
    // Until the writer drops the sender.
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_INTERVAL) {
        // PASSIVE copies what it can without holding the writer up.
        let started = std::time::Instant::now();
        match checkpoint(&conn, "PASSIVE") {
            Ok((frames, copied)) => {
                tracing::trace!(took = ?started.elapsed(), frames, copied, "Checkpointed.");
                if frames.saturating_mul(page_size) > wal_bytes {
                    restart_due.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::debug!(error = %e, "Checkpoint did not complete."),
        }
    }
    if let Err(e) = checkpoint(&conn, "TRUNCATE") {
        tracing::debug!(error = %e, "Final checkpoint did not complete.");
    }
}

/// Runs a checkpoint; returns the frames in the WAL and how many of them are now copied into
/// the database (-1 each when the WAL is not in use).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that writes without pause and finishes the checkpoint when asked keeps its WAL
    /// within the bound: the WAL starts over instead of growing with all that is written.
    #[test]
    fn a_busy_writer_asked_to_finish_the_checkpoint_keeps_the_wal_bounded() {
        const BOUND: i64 = 512 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let conn = Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.pragma_update(None, "journal_size_limit", BOUND)
            .unwrap();
        conn.execute_batch("CREATE TABLE t (b BLOB)").unwrap();
        let checkpointer = Checkpointer::spawn_bounded(&db, BOUND).unwrap();
        let wal = db.with_file_name("t.db-wal");
        let (mut written, mut asked, mut largest, mut shrunk, mut last) = (0u64, 0, 0u64, 0, 0u64);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        // Until the WAL has started over a few times: it is then cut back to its size limit,
        // which a WAL that only grows never is.
        while shrunk < 8 {
            assert!(
                std::time::Instant::now() < deadline,
                "asked {asked} times, shrunk {shrunk} times, {written} written, WAL reached {largest}"
            );
            conn.execute("INSERT INTO t (b) VALUES (zeroblob(16384))", [])
                .unwrap();
            written += 16384;
            let size = std::fs::metadata(&wal).unwrap().len();
            if size < last {
                shrunk += 1;
            }
            (last, largest) = (size, largest.max(size));
            if checkpointer.wal_restart_due() {
                finish_checkpoint(&conn);
                asked += 1;
            }
        }
        assert!(
            written > 2 * largest,
            "{written} written, WAL reached {largest}"
        );
        drop(checkpointer);
    }
}
