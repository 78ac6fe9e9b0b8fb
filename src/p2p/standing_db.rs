//! Keeping the standing ledger in the database (`store::peer_standing`): loaded at start, the
//! changed rows written every [`SAVE_INTERVAL`] and at shutdown, through a connection of the
//! network task's own on a blocking thread, one short transaction each time. Nothing here is
//! on the path of an event.
//!
//! Owns that connection. Depends on the ledger only.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libp2p::PeerId;
use rusqlite::Connection;
use tokio_util::task::TaskTracker;

use super::standing::{Ledger, MAX_REMEMBERED_PEERS};
use crate::store::peer_standing::{self, SavedPeer};

/// Between writes of what changed: a crash loses at most this much of the ledger's news.
const SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a write may wait for the database's lock (the writer holds it per batch).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last write.
const FINAL_SAVE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct StandingDb {
    conn: Arc<Mutex<Connection>>,
    tracker: TaskTracker,
    last_save: Instant,
    /// A write is under way: the next waits for the next tick.
    busy: Arc<AtomicBool>,
}

impl StandingDb {
    /// Opens the database and reads the saved standing.
    pub(super) async fn open(
        db_file: &Path,
        tracker: TaskTracker,
    ) -> anyhow::Result<(Self, Vec<SavedPeer>)> {
        let path = db_file.to_owned();
        let (conn, rows) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let conn = Connection::open(&path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            let rows = peer_standing::load(&conn, MAX_REMEMBERED_PEERS)?;
            Ok((conn, rows))
        })
        .await
        .context("reading the peers' standing")?
        .context("reading the peers' standing")?;
        let db = Self {
            conn: Arc::new(Mutex::new(conn)),
            tracker,
            last_save: Instant::now(),
            busy: Arc::new(AtomicBool::new(false)),
        };
        Ok((db, rows))
    }

    /// Every tick: writes what changed, once per [`SAVE_INTERVAL`], unless a write is still
    /// under way.
    pub(super) fn on_tick(&mut self, ledger: &mut Ledger<PeerId>, now: Instant) {
        if now.duration_since(self.last_save) < SAVE_INTERVAL || self.busy.load(Ordering::Acquire) {
            return;
        }
        self.last_save = now;
        let rows = ledger.unsaved(|p| p.to_string());
        if rows.is_empty() {
            return;
        }
        self.busy.store(true, Ordering::Release);
        let (conn, busy) = (self.conn.clone(), self.busy.clone());
        self.tracker.spawn_blocking(move || {
            write(&conn, &rows);
            busy.store(false, Ordering::Release);
        });
    }

    /// At shutdown: writes what changed and waits for it (a little while at most).
    pub(super) async fn save_now(&mut self, ledger: &mut Ledger<PeerId>) {
        let rows = ledger.unsaved(|p| p.to_string());
        if rows.is_empty() {
            return;
        }
        let conn = self.conn.clone();
        let n = rows.len();
        let task = self.tracker.spawn_blocking(move || write(&conn, &rows));
        if tokio::time::timeout(FINAL_SAVE_TIMEOUT, task)
            .await
            .is_err()
        {
            tracing::warn!(peers = n, "Could not save the peers' standing in time.");
        }
    }
}

fn write(conn: &Mutex<Connection>, rows: &[SavedPeer]) {
    let Ok(mut conn) = conn.lock() else {
        return;
    };
    if let Err(e) = peer_standing::save(&mut conn, rows, MAX_REMEMBERED_PEERS) {
        tracing::warn!(error = %e, peers = rows.len(), "Could not save the peers' standing.");
    }
}
