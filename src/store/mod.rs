//! The SQLite database: upstream's `honey` table exactly (so existing databases and tools keep
//! working), plus tables of our own: the node id, and per-address / per-number summaries that
//! make the API's lookups and full lists index scans instead of aggregations over every event;
//! the credentials requests tried (`sentrypeer_sip_auth`, one row per event that tried any,
//! joined to `honey` by `event_uuid`), the accounts tried (`sentrypeer_usernames`, a summary), and
//! the events sent by a source the node let register (`sentrypeer_registered_events`).
//!
//! One writer (`Writer`, owned by the sqlite output's thread) and a small pool of read-only
//! connections for the API (`ReadPool`). WAL lets them run side by side.

pub mod actors;
pub mod analytics;
mod checkpoint;
mod export;
mod numbers;
pub mod outbox;
pub mod peer_standing;
mod read;
mod write;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use uuid::Uuid;

pub use export::{ExportCursor, ExportRequest, Scope};
pub use numbers::{MAX_NUMBER_DIGITS, is_dialled_number};
pub use read::{ListCursor, ListKind, ReadPool};
pub use write::{OutboxWriter, Writer};

/// How long a connection waits for a lock before giving up; the writer holds it only per batch.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer's page cache, in KiB: the hot pages of the summaries and of `honey`'s tail; the
/// kernel's cache holds the rest. Part of the node's memory target (under 100 MB in all), shared
/// with the pending summaries (`write::MAX_PENDING_KEYS`): written once or twice a second,
/// the summaries' pages come back from the kernel's cache in milliseconds, so 12 MiB rather
/// than 24 lost nothing at 50,000 probes/s and gave the pending actors their room.
const WRITER_CACHE_KIB: i64 = 12 * 1024;
/// The page size of a database file this node creates. A summary's write changes rows at
/// random places in tables bigger than the page cache, and the WAL takes a changed page as two
/// writes (frame header and page): 16 KiB pages make a quarter as many frames per write of the
/// summaries (not fewer bytes: a page one row dirties is 16 KiB), and the writer takes 15-25%
/// more events a second than with SQLite's 4 KiB (`cargo bench --bench store`,
/// `bench/RESULTS.md`).
const PAGE_SIZE: i64 = 16 * 1024;
/// How much of the database file a reader maps into memory: lookups of summaries larger than a
/// reader's page cache then read pages from the kernel's cache without a `pread` each (the WAL
/// is still read as usual). Address space only; the kernel shares the pages among readers.
const READER_MMAP_BYTES: i64 = 256 * 1024 * 1024;

/// Upstream's table, verbatim.
const UPSTREAM_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS honey (honey_id INTEGER PRIMARY KEY, event_timestamp TEXT, event_uuid TEXT,
  collected_method TEXT, source_ip TEXT, called_number TEXT, transport_type TEXT, method TEXT,
  user_agent TEXT, sip_message TEXT, created_by_node_id TEXT,
  created_at DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
";

/// Upstream's three indexes on `honey`. They serve only upstream's own queries (our API reads
/// the summary tables), yet cost every insert three more B-tree writes, two of them at random
/// places (numbers, event UUIDs): about half the database's write volume per event. So they are
/// dropped; upstream creates them again (`CREATE INDEX IF NOT EXISTS`) when it opens the file.
const UPSTREAM_INDEXES: [&str; 3] = ["source_ip_index", "called_number_index", "event_uuid_index"];

/// Keeps the summaries true when an operator deletes events (a false positive, their own PBX):
/// only for rows the summaries already counted (at or below the watermark), and not while the
/// writer prunes old events for `--retention` (the summaries and the bad-actor set keep what
/// those events told).
const DELETE_TRIGGER: &str = "
DROP TRIGGER IF EXISTS sentrypeer_honey_deleted;
CREATE TABLE IF NOT EXISTS sentrypeer_retention (id INTEGER PRIMARY KEY CHECK (id = 1),
  pruning INTEGER NOT NULL DEFAULT 0, pruned INTEGER NOT NULL DEFAULT 0);
INSERT OR IGNORE INTO sentrypeer_retention (id) VALUES (1);
CREATE TRIGGER IF NOT EXISTS sentrypeer_honey_deleted_v2 AFTER DELETE ON honey
WHEN old.honey_id <= (SELECT last_honey_id FROM sentrypeer_summary_state WHERE id = 1)
  AND (SELECT pruning FROM sentrypeer_retention WHERE id = 1) = 0
BEGIN
  UPDATE sentrypeer_numbers SET seen_count = seen_count - 1 WHERE called_number = old.called_number;
  DELETE FROM sentrypeer_numbers WHERE called_number = old.called_number AND seen_count <= 0;
  UPDATE sentrypeer_ip_addresses SET seen_count = seen_count - 1 WHERE ip_address = CASE
    WHEN old.source_ip LIKE '[%]:%' THEN substr(old.source_ip, 2, instr(old.source_ip, ']') - 2)
    WHEN old.source_ip LIKE '%.%:%' THEN substr(old.source_ip, 1, instr(old.source_ip, ':') - 1)
    ELSE old.source_ip END;
  DELETE FROM sentrypeer_ip_addresses WHERE seen_count <= 0 AND ip_address = CASE
    WHEN old.source_ip LIKE '[%]:%' THEN substr(old.source_ip, 2, instr(old.source_ip, ']') - 2)
    WHEN old.source_ip LIKE '%.%:%' THEN substr(old.source_ip, 1, instr(old.source_ip, ':') - 1)
    ELSE old.source_ip END;
END;
";

/// Our additions. Never rename or drop anything of upstream's.
const OUR_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sentrypeer_node (id INTEGER PRIMARY KEY CHECK (id = 1), node_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sentrypeer_ip_addresses (ip_address TEXT PRIMARY KEY NOT NULL,
  seen_last TEXT NOT NULL, seen_count INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sentrypeer_numbers (called_number TEXT PRIMARY KEY NOT NULL,
  seen_last TEXT NOT NULL, seen_count INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sentrypeer_summary_state (id INTEGER PRIMARY KEY CHECK (id = 1),
  last_honey_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sentrypeer_writer_alive (id INTEGER PRIMARY KEY CHECK (id = 1),
  at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sentrypeer_honey_event_timestamp ON honey (event_timestamp);
CREATE TABLE IF NOT EXISTS sentrypeer_signed_events (event_uuid TEXT PRIMARY KEY NOT NULL,
  author TEXT NOT NULL, at_ms INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS sentrypeer_signed_events_at_ms ON sentrypeer_signed_events (at_ms);
CREATE TABLE IF NOT EXISTS sentrypeer_sip_auth (id INTEGER PRIMARY KEY, event_uuid TEXT NOT NULL,
  event_timestamp TEXT NOT NULL, source_ip TEXT NOT NULL, method TEXT NOT NULL,
  username TEXT NOT NULL, auth_header TEXT, realm TEXT, uri TEXT, response TEXT,
  own_nonce INTEGER NOT NULL, trap_password_matched INTEGER NOT NULL,
  registered_attacker INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sentrypeer_sip_auth_event_timestamp ON sentrypeer_sip_auth (event_timestamp);
CREATE TABLE IF NOT EXISTS sentrypeer_usernames (username TEXT PRIMARY KEY NOT NULL,
  seen_last TEXT NOT NULL, seen_last_ms INTEGER NOT NULL, seen_count INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sentrypeer_usernames_seen_last ON sentrypeer_usernames (seen_last);
CREATE TABLE IF NOT EXISTS sentrypeer_registered_events (id INTEGER PRIMARY KEY,
  event_uuid TEXT NOT NULL, event_timestamp TEXT NOT NULL, source_ip TEXT NOT NULL,
  method TEXT NOT NULL, called_number TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sentrypeer_registered_events_event_timestamp ON sentrypeer_registered_events (event_timestamp);
";

/// How long a peer's event is kept in its signed form (`sentrypeer_signed_events`) to serve it
/// on in catch-up: as long as peers accept it (`p2p::validate::MAX_EVENT_AGE`), by its own
/// timestamp. The event itself stays in `honey` like any other.
pub const SIGNED_EVENTS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Columns we add to upstream's `honey` (adding is allowed; upstream's tools ignore them).
const OUR_HONEY_COLUMNS: [(&str, &str); 2] = [
    // For an event received from the peer network: the peer id of its author, whose signature
    // it carries (whoever relayed or served it). NULL for events this node captured itself.
    ("received_from_peer", "TEXT"),
    // Where the probe was sent (`IP:PORT`), as the JSON log's `destination_ip`: this node's own
    // address for its own events, hidden when they are shared (`0.0.0.0` for peers' events).
    ("destination_ip", "TEXT"),
];

/// Adds our columns to `honey` where they are missing.
fn add_honey_columns(conn: &Connection) -> rusqlite::Result<()> {
    let mut have = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('honey')")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            have.push(r.get::<_, String>(0)?);
        }
    }
    for (name, ty) in OUR_HONEY_COLUMNS {
        if !have.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            conn.execute_batch(&format!("ALTER TABLE honey ADD COLUMN {name} {ty}"))?;
        }
    }
    Ok(())
}

/// The bare IP of a `source_ip` value, also for upstream's `IP:PORT` and `[IPv6]:PORT` rows.
const NORMALISED_IP_SQL: &str = "CASE
  WHEN source_ip LIKE '[%]:%' THEN substr(source_ip, 2, instr(source_ip, ']') - 2)
  WHEN source_ip LIKE '%.%:%' THEN substr(source_ip, 1, instr(source_ip, ':') - 1)
  ELSE source_ip END";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database holds a node id that is not a UUID: {0}")]
    BadNodeId(String),
    #[error("cannot start the checkpoint thread: {0}")]
    Thread(std::io::Error),
}

/// What opening the database found.
#[derive(Debug)]
pub struct Opened {
    pub writer: Writer,
    pub node_id: Uuid,
    /// Upstream-written events folded into the summaries on this open.
    pub summarised: u64,
}

/// Opens (creating if needed) the database, applies our schema, brings the summaries up to
/// date with any rows written by someone else (upstream), and returns the writer and node id.
pub fn open(path: &Path) -> Result<Opened, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Only a new file takes it (an existing one keeps the page size it was made with).
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // In WAL, NORMAL loses nothing on a process crash, only possibly the last commits on power loss.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // After a checkpoint resets it, the WAL file is cut back to this size.
    conn.pragma_update(None, "journal_size_limit", checkpoint::WAL_KEPT_BYTES)?;
    // The indexes take inserts at random places (event UUIDs, numbers); a page cache that holds
    // their hot pages keeps a batch from re-reading them. SQLite grows it only as used.
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run on their own thread (`checkpoint`), never inside the writer's commits.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let (node_id, summarised) = prepare(&conn, Fold::Always)?;
    Ok(Opened {
        writer: Writer::new(conn, path)?,
        node_id,
        summarised,
    })
}

/// Applies our schema and brings the summaries and the bad-actor facts up to date; returns
/// the node id and how many events written by someone else were folded in.
fn prepare(conn: &Connection, fold: Fold) -> Result<(Uuid, u64), StoreError> {
    conn.execute_batch(UPSTREAM_SCHEMA)?;
    for index in UPSTREAM_INDEXES {
        conn.execute_batch(&format!("DROP INDEX IF EXISTS {index}"))?;
    }
    conn.execute_batch(OUR_SCHEMA)?;
    conn.execute_batch(DELETE_TRIGGER)?;
    add_honey_columns(conn)?;
    conn.execute_batch(outbox::SCHEMA)?;
    conn.execute_batch(peer_standing::SCHEMA)?;
    conn.execute_batch(analytics::SCHEMA)?;
    let node_id = node_id(conn)?;
    // Before the catch-up: a database from before the bad-actor set gets its facts from
    // `honey` here, and the catch-up then adds only rows written since by someone else.
    let migrated = actors::migrate(conn)?;
    // The lists' indexes name the set's columns, which `migrate` adds to older databases.
    numbers::create_index(conn)?;
    let summarised = match fold {
        Fold::UnlessAWriterIsAlive if writer_alive(conn)? => 0,
        _ => catch_up_summaries(conn)?,
    };
    if migrated || summarised > 0 {
        // New facts no verdict was drawn from yet: the writer re-evaluates every actor.
        actors::store_rules(conn, "")?;
    }
    Ok((node_id, summarised))
}

/// Opens the database for reading only (`sentrypeer export`, beside a running node or not):
/// brings its schema up to date first (a short write), then hands out read connections.
pub fn open_for_reading(path: &Path) -> Result<(ReadPool, Uuid), StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let (node_id, _) = prepare(&conn, Fold::UnlessAWriterIsAlive)?;
    Ok((ReadPool::new(path), node_id))
}

/// The node id, generated on first open and kept.
fn node_id(conn: &Connection) -> Result<Uuid, StoreError> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT node_id FROM sentrypeer_node WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match existing {
        Some(s) => Uuid::parse_str(&s).map_err(|_| StoreError::BadNodeId(s)),
        None => {
            let id = Uuid::new_v4();
            conn.execute(
                "INSERT INTO sentrypeer_node (id, node_id) VALUES (1, ?1)",
                [id.hyphenated().to_string()],
            )?;
            Ok(id)
        }
    }
}

/// Whether opening the file folds the rows past the summaries' watermark into them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    /// The writer's own open: whatever is past the watermark, nobody else will count.
    Always,
    /// Beside a node, rows past the watermark may be ones its writer holds to summarise (see
    /// `Writer::write_batch_behind`): folding them too would count them twice.
    UnlessAWriterIsAlive,
}

/// A writer that stopped marking itself alive this long ago has stopped (or crashed).
const WRITER_ALIVE_MS: i64 = 10_000;

/// Whether a writer marked itself alive recently (it does so at every upkeep tick, once a
/// second, and clears the mark when it stops cleanly).
fn writer_alive(conn: &Connection) -> rusqlite::Result<bool> {
    let at: Option<i64> = conn
        .query_row(
            "SELECT at_ms FROM sentrypeer_writer_alive WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(at.is_some_and(|at| crate::actors::now_ms().saturating_sub(at) < WRITER_ALIVE_MS))
}

/// Marks the writer alive now, or (`None`) stopped.
fn mark_writer_alive(conn: &Connection, now_ms: Option<i64>) -> rusqlite::Result<()> {
    match now_ms {
        Some(ms) => conn.execute(
            "INSERT INTO sentrypeer_writer_alive (id, at_ms) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET at_ms = excluded.at_ms",
            [ms],
        ),
        None => conn.execute("DELETE FROM sentrypeer_writer_alive", []),
    }?;
    Ok(())
}

/// Folds `honey` rows past the summaries' watermark into them; returns how many rows.
fn catch_up_summaries(conn: &Connection) -> Result<u64, StoreError> {
    let watermark: i64 = conn
        .query_row(
            "SELECT last_honey_id FROM sentrypeer_summary_state WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let (max_id, pending): (Option<i64>, i64) = conn.query_row(
        "SELECT max(honey_id), count(*) FROM honey WHERE honey_id > ?1",
        [watermark],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let Some(max_id) = max_id else { return Ok(0) };
    let tx = conn.unchecked_transaction()?;
    let folded_from = watermark;
    tx.execute(
        &format!(
            "INSERT INTO sentrypeer_ip_addresses (ip_address, seen_last, seen_count)
             SELECT ip, max(ts), count(*) FROM (SELECT {NORMALISED_IP_SQL} AS ip, coalesce(event_timestamp, '') AS ts
               FROM honey WHERE honey_id > ?1 AND honey_id <= ?2 AND source_ip IS NOT NULL) GROUP BY ip
             ON CONFLICT(ip_address) DO UPDATE SET seen_last = max(seen_last, excluded.seen_last),
               seen_count = seen_count + excluded.seen_count"
        ),
        [watermark, max_id],
    )?;
    tx.execute(
        concat!(
            "INSERT INTO sentrypeer_numbers (called_number, seen_last, seen_count, dialled)
             SELECT called_number, max(coalesce(event_timestamp, '')), count(*), ",
            numbers::dialled_sql!("called_number"),
            " FROM honey
               WHERE honey_id > ?1 AND honey_id <= ?2 AND called_number IS NOT NULL
               GROUP BY called_number
             ON CONFLICT(called_number) DO UPDATE SET seen_last = max(seen_last, excluded.seen_last),
               seen_count = seen_count + excluded.seen_count"
        ),
        [watermark, max_id],
    )?;
    actors::backfill(&tx, Some(folded_from))?;
    set_watermark(&tx, max_id)?;
    tx.commit()?;
    Ok(pending as u64)
}

fn set_watermark(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO sentrypeer_summary_state (id, last_honey_id) VALUES (1, ?1)
         ON CONFLICT(id) DO UPDATE SET last_honey_id = excluded.last_honey_id",
        [id],
    )?;
    Ok(())
}

fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_size(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_file_has_large_pages_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.db");
        open(&new).unwrap();
        assert_eq!(page_size(&new), PAGE_SIZE);

        // A file another program made (upstream: SQLite's default 4 KiB pages).
        let old = dir.path().join("old.db");
        let conn = Connection::open(&old).unwrap();
        conn.execute_batch(UPSTREAM_SCHEMA).unwrap();
        drop(conn);
        assert_eq!(page_size(&old), 4096);
        let mut w = open(&old).unwrap().writer;
        w.write_batch(&[std::sync::Arc::new(crate::event::tests::sample())])
            .unwrap();
        drop(w);
        assert_eq!(page_size(&old), 4096);
        let rows: i64 = Connection::open(&old)
            .unwrap()
            .query_row("SELECT count(*) FROM honey", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }
}
