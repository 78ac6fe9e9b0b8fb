//! Moves WAL checkpoints off the writer's thread: the writer never checkpoints (its
//! `wal_autocheckpoint` is 0), this thread does so on its own connection, in parallel, and a
//! final TRUNCATE checkpoint when the writer is dropped leaves a tidy database file behind.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often pending WAL frames are copied into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// A WAL larger than this is reset with a RESTART checkpoint, which waits briefly for the
/// writer; keeps the WAL file bounded under a sustained flood.
const WAL_RESTART_BYTES: u64 = 64 * 1024 * 1024;

/// Runs checkpoints until dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn spawn(db: &Path) -> std::io::Result<Self> {
        let (stop, rx) = mpsc::channel::<()>();
        let db = db.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&db, &rx))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
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

fn run(db: &Path, stop: &mpsc::Receiver<()>) {
    let conn = match Connection::open(db)
        .and_then(|c| c.busy_timeout(super::BUSY_TIMEOUT).map(|_| c))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "Checkpoint connection failed; the WAL will grow until restart.");
            return;
        }
    };
    let wal = wal_path(db);
    // Until the writer drops the sender.
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_INTERVAL) {
        // A PASSIVE checkpoint copies what it can without holding the writer up. When the WAL
        // has outgrown its bound, the RESTART that follows (which holds the writer for as long
        // as it runs) has only the frames added since left to copy, not the whole WAL.
        // (Checkpointing again at once while the writer keeps adding frames was tried: on two
        // cores it took more from the writer than the shorter RESTARTs gave back.)
        let started = std::time::Instant::now();
        if let Err(e) = checkpoint(&conn, "PASSIVE") {
            tracing::debug!(error = %e, "Checkpoint did not complete.");
        }
        tracing::trace!(took = ?started.elapsed(), "Checkpointed.");
        let big = std::fs::metadata(&wal)
            .map(|m| m.len() > WAL_RESTART_BYTES)
            .unwrap_or(false);
        if big {
            let started = std::time::Instant::now();
            if let Err(e) = checkpoint(&conn, "RESTART") {
                tracing::debug!(error = %e, "RESTART checkpoint did not complete.");
            }
            tracing::trace!(took = ?started.elapsed(), "WAL restarted.");
        }
    }
    if let Err(e) = checkpoint(&conn, "TRUNCATE") {
        tracing::debug!(error = %e, "Final checkpoint did not complete.");
    }
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<()> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
}

fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push("-wal");
    PathBuf::from(s)
}
