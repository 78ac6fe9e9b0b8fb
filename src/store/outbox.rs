//! The WebHook's durable outbox and dead-letter table, in the same database as `honey`.
//!
//! The sqlite output's `Writer` puts each event's JSON in the outbox in the same transaction as
//! its `honey` row, so an event is either stored and queued for delivery, or neither. The
//! deliverer (`output::webhook`) reads due rows through its own connection and deletes each row
//! only after the endpoint answered 2xx; a rejected row, or the oldest rows when the outbox is
//! over its cap, move to the dead-letter table, from which `sentrypeer webhook replay` moves
//! them back. The dead letters are kept to a cap, the oldest deleted beyond it. Nothing here
//! talks HTTP.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, Transaction};
use serde::Serialize;

/// The outbox and dead-letter tables. Times the deliverer compares (`next_attempt_at`) are
/// Unix milliseconds; times for people (`created_at`, `dead_lettered_at`) are text like `honey`'s.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sentrypeer_webhook_outbox (id INTEGER PRIMARY KEY,
  event_uuid TEXT NOT NULL, body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL DEFAULT 0, last_error TEXT,
  created_at DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
CREATE INDEX IF NOT EXISTS sentrypeer_webhook_outbox_next_attempt_at
  ON sentrypeer_webhook_outbox (next_attempt_at);
CREATE TABLE IF NOT EXISTS sentrypeer_webhook_dead_letter (id INTEGER PRIMARY KEY,
  event_uuid TEXT NOT NULL, body TEXT NOT NULL, attempts INTEGER NOT NULL, status INTEGER,
  reason TEXT NOT NULL, response_excerpt TEXT, created_at DATETIME,
  dead_lettered_at DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
";

/// The reason written for rows pushed out of a full outbox.
pub const REASON_OUTBOX_FULL: &str = "outbox full";

const INSERT: &str = "INSERT INTO sentrypeer_webhook_outbox (event_uuid, body, next_attempt_at)
  VALUES (?1, ?2, ?3)";

/// Moves one outbox row to the dead letters; a row already gone (delivered, or pushed out by a
/// full outbox meanwhile) moves nothing.
const DEAD_LETTER_ONE: &str = "INSERT INTO sentrypeer_webhook_dead_letter
  (event_uuid, body, attempts, status, reason, response_excerpt, created_at)
  SELECT event_uuid, body, attempts + ?2, ?3, ?4, ?5, created_at
  FROM sentrypeer_webhook_outbox WHERE id = ?1";
const DELETE_ONE: &str = "DELETE FROM sentrypeer_webhook_outbox WHERE id = ?1";

/// A read-write connection for the deliverer or a `webhook` command: the database must exist
/// (a typo in `-f` must not create an empty one); the tables are created if missing.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Unix time in milliseconds, the unit of `next_attempt_at`.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Queues one event body; part of the writer's batch transaction.
pub(crate) fn insert(tx: &Transaction<'_>, event_uuid: &str, body: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(INSERT)?
        .execute(rusqlite::params![event_uuid, body, now_ms()])?;
    Ok(())
}

/// Dead-letters the oldest rows beyond `cap`; returns how many moved.
pub(crate) fn enforce_cap(tx: &Transaction<'_>, cap: u64) -> rusqlite::Result<u64> {
    let depth = depth(tx)?;
    let over = depth.saturating_sub(cap);
    if over == 0 {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO sentrypeer_webhook_dead_letter
           (event_uuid, body, attempts, status, reason, response_excerpt, created_at)
         SELECT event_uuid, body, attempts, NULL, ?2, last_error, created_at
         FROM sentrypeer_webhook_outbox ORDER BY id LIMIT ?1",
        rusqlite::params![over as i64, REASON_OUTBOX_FULL],
    )?;
    tx.execute(
        "DELETE FROM sentrypeer_webhook_outbox WHERE id IN
           (SELECT id FROM sentrypeer_webhook_outbox ORDER BY id LIMIT ?1)",
        [over as i64],
    )?;
    Ok(over)
}

/// Rows waiting in the outbox.
pub fn depth(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM sentrypeer_webhook_outbox", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as u64)
}

/// Rows waiting in the outbox, and of those the ones whose last attempt failed.
pub fn depth_and_retrying(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    conn.query_row(
        "SELECT count(*), count(*) FILTER (WHERE attempts > 0) FROM sentrypeer_webhook_outbox",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )
}

/// One outbox row taken for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: i64,
    pub body: String,
}

/// Up to `limit` rows due at `now`, oldest first, with ids above `after`. The unary `+` keeps
/// SQLite on the rowid order (a plain scan that stops at `limit`) instead of sorting every due
/// row out of the `next_attempt_at` index.
pub fn due(
    conn: &Connection,
    now: i64,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Pending>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, body FROM sentrypeer_webhook_outbox
         WHERE +next_attempt_at <= ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map(rusqlite::params![now, after, limit as i64], |r| {
        Ok(Pending {
            id: r.get(0)?,
            body: r.get(1)?,
        })
    })?;
    rows.collect()
}

/// When the next row not yet due becomes due (Unix ms), if any.
pub fn next_due_after(conn: &Connection, now: i64) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT min(next_attempt_at) FROM sentrypeer_webhook_outbox WHERE next_attempt_at > ?1",
        [now],
        |r| r.get(0),
    )
}

/// Deletes delivered rows; returns how many were still there.
pub fn delete(conn: &mut Connection, ids: &[i64]) -> rusqlite::Result<u64> {
    let tx = immediate(conn)?;
    let mut n = 0;
    {
        let mut stmt = tx.prepare_cached(DELETE_ONE)?;
        for id in ids {
            n += stmt.execute([id])? as u64;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// Records a failed attempt: the rows are tried again at `next_attempt_at`.
pub fn reschedule(
    conn: &mut Connection,
    ids: &[i64],
    next_attempt_at: i64,
    error: &str,
) -> rusqlite::Result<()> {
    let tx = immediate(conn)?;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE sentrypeer_webhook_outbox SET attempts = attempts + 1,
               next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
        )?;
        for id in ids {
            stmt.execute(rusqlite::params![id, next_attempt_at, error])?;
        }
    }
    tx.commit()
}

/// Why the endpoint refused rows for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: Option<u16>,
    pub reason: String,
    pub excerpt: String,
}

/// Moves rejected rows to the dead letters (counting this attempt); returns how many moved.
pub fn dead_letter(conn: &mut Connection, ids: &[i64], why: &Rejection) -> rusqlite::Result<u64> {
    let tx = immediate(conn)?;
    let mut n = 0;
    {
        let mut copy = tx.prepare_cached(DEAD_LETTER_ONE)?;
        let mut delete = tx.prepare_cached(DELETE_ONE)?;
        for id in ids {
            copy.execute(rusqlite::params![
                id,
                1,
                why.status,
                why.reason,
                why.excerpt
            ])?;
            n += delete.execute([id])? as u64;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// One dead-lettered event, as `sentrypeer webhook dead-letters` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub event_uuid: String,
    pub attempts: i64,
    pub status: Option<u16>,
    pub reason: String,
    pub response_excerpt: Option<String>,
    pub created_at: Option<String>,
    pub dead_lettered_at: Option<String>,
}

/// Dead letters, oldest first, from id `after` on.
pub fn dead_letters(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare(
        "SELECT id, event_uuid, attempts, status, reason, response_excerpt, created_at,
           dead_lettered_at FROM sentrypeer_webhook_dead_letter WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![after, limit as i64], |r| {
        Ok(DeadLetter {
            id: r.get(0)?,
            event_uuid: r.get(1)?,
            attempts: r.get(2)?,
            status: r.get(3)?,
            reason: r.get(4)?,
            response_excerpt: r.get(5)?,
            created_at: r.get(6)?,
            dead_lettered_at: r.get(7)?,
        })
    })?;
    rows.collect()
}

/// Dead letters in the table.
pub fn dead_letter_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM sentrypeer_webhook_dead_letter",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}

/// Deletes the oldest dead letters beyond `cap` in one transaction; returns how many went.
/// The span of ids bounds the count from above and costs two index lookups, so a table under
/// its cap (the usual case) is never counted.
pub fn prune_dead_letters(conn: &mut Connection, cap: u64) -> rusqlite::Result<u64> {
    let span: i64 = conn.query_row(
        "SELECT coalesce((SELECT max(id) FROM sentrypeer_webhook_dead_letter)
           - (SELECT min(id) FROM sentrypeer_webhook_dead_letter) + 1, 0)",
        [],
        |r| r.get(0),
    )?;
    if span <= 0 || span as u64 <= cap {
        return Ok(0);
    }
    let tx = immediate(conn)?;
    let over = dead_letter_count(&tx)?.saturating_sub(cap);
    if over > 0 {
        tx.execute(
            "DELETE FROM sentrypeer_webhook_dead_letter WHERE id IN
               (SELECT id FROM sentrypeer_webhook_dead_letter ORDER BY id LIMIT ?1)",
            [over as i64],
        )?;
    }
    tx.commit()?;
    Ok(over)
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay<'a> {
    All,
    Ids(&'a [i64]),
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replayed {
    /// Dead letters moved back to the outbox, due at once with a fresh attempt count.
    pub moved: u64,
    /// Requested ids that are not dead letters.
    pub missing: Vec<i64>,
}

/// Moves dead letters back to the outbox in one transaction.
pub fn replay(conn: &mut Connection, which: Replay<'_>) -> rusqlite::Result<Replayed> {
    let tx = immediate(conn)?;
    let now = now_ms();
    let mut out = Replayed::default();
    match which {
        Replay::All => {
            out.moved = tx.execute(
                "INSERT INTO sentrypeer_webhook_outbox (event_uuid, body, next_attempt_at, created_at)
                 SELECT event_uuid, body, ?1, created_at FROM sentrypeer_webhook_dead_letter ORDER BY id",
                [now],
            )? as u64;
            tx.execute("DELETE FROM sentrypeer_webhook_dead_letter", [])?;
        }
        Replay::Ids(ids) => {
            let mut copy = tx.prepare_cached(
                "INSERT INTO sentrypeer_webhook_outbox (event_uuid, body, next_attempt_at, created_at)
                 SELECT event_uuid, body, ?2, created_at FROM sentrypeer_webhook_dead_letter WHERE id = ?1",
            )?;
            let mut delete =
                tx.prepare_cached("DELETE FROM sentrypeer_webhook_dead_letter WHERE id = ?1")?;
            for id in ids {
                if copy.execute(rusqlite::params![id, now])? == 0 {
                    out.missing.push(*id);
                    continue;
                }
                delete.execute([id])?;
                out.moved += 1;
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

/// A write transaction that takes the lock up front, so that it waits (busy timeout) for the
/// sqlite output's batch instead of failing when it upgrades from a stale read.
fn immediate(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    fn queue(c: &mut Connection, n: usize) {
        let tx = c.transaction().unwrap();
        for i in 0..n {
            insert(&tx, &format!("uuid-{i}"), &format!("{{\"n\":{i}}}")).unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_full_outbox_dead_letters_its_oldest_rows() {
        let mut c = db();
        queue(&mut c, 5);
        let tx = c.transaction().unwrap();
        assert_eq!(enforce_cap(&tx, 3).unwrap(), 2);
        tx.commit().unwrap();
        assert_eq!(depth(&c).unwrap(), 3);
        let dead = dead_letters(&c, 0, 10).unwrap();
        let uuids: Vec<_> = dead.iter().map(|d| d.event_uuid.as_str()).collect();
        assert_eq!(uuids, ["uuid-0", "uuid-1"]);
        assert!(
            dead.iter()
                .all(|d| d.reason == REASON_OUTBOX_FULL && d.status.is_none())
        );
    }

    #[test]
    fn rows_are_due_in_order_and_rescheduled_rows_wait() {
        let mut c = db();
        queue(&mut c, 4);
        let now = now_ms();
        let due_ids = |c: &Connection, after| -> Vec<i64> {
            due(c, now, after, 10)
                .unwrap()
                .iter()
                .map(|p| p.id)
                .collect()
        };
        assert_eq!(due_ids(&c, 0), [1, 2, 3, 4]);
        reschedule(&mut c, &[2], now + 1000, "HTTP 503").unwrap();
        assert_eq!(depth_and_retrying(&c).unwrap(), (4, 1));
        assert_eq!(due_ids(&c, 0), [1, 3, 4]);
        assert_eq!(due_ids(&c, 3), [4]);
        assert_eq!(next_due_after(&c, now).unwrap(), Some(now + 1000));
        assert_eq!(delete(&mut c, &[1, 3, 99]).unwrap(), 2);
        assert_eq!(depth(&c).unwrap(), 2);
    }

    #[test]
    fn the_oldest_dead_letters_beyond_the_cap_are_deleted() {
        let mut c = db();
        assert_eq!(prune_dead_letters(&mut c, 3).unwrap(), 0, "empty");
        queue(&mut c, 8);
        let tx = c.transaction().unwrap();
        assert_eq!(enforce_cap(&tx, 2).unwrap(), 6);
        tx.commit().unwrap();
        assert_eq!(prune_dead_letters(&mut c, 6).unwrap(), 0, "at the cap");
        assert_eq!(prune_dead_letters(&mut c, 4).unwrap(), 2);
        let uuids = |c: &Connection| -> Vec<String> {
            dead_letters(c, 0, 10)
                .unwrap()
                .into_iter()
                .map(|d| d.event_uuid)
                .collect()
        };
        assert_eq!(uuids(&c), ["uuid-2", "uuid-3", "uuid-4", "uuid-5"]);
        // A gap left by a replay: the span is over the cap, the count is not.
        let gap = dead_letters(&c, 0, 10).unwrap()[1].id;
        replay(&mut c, Replay::Ids(&[gap])).unwrap();
        assert_eq!(prune_dead_letters(&mut c, 3).unwrap(), 0);
        assert_eq!(prune_dead_letters(&mut c, 1).unwrap(), 2);
        assert_eq!(uuids(&c), ["uuid-5"]);
    }

    #[test]
    fn a_rejected_row_can_be_replayed() {
        let mut c = db();
        queue(&mut c, 2);
        let why = Rejection {
            status: Some(400),
            reason: "HTTP 400".into(),
            excerpt: "bad event".into(),
        };
        assert_eq!(dead_letter(&mut c, &[1], &why).unwrap(), 1);
        let dead = dead_letters(&c, 0, 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].status, dead[0].attempts), (Some(400), 1));
        assert_eq!(dead[0].response_excerpt.as_deref(), Some("bad event"));
        let r = replay(&mut c, Replay::Ids(&[dead[0].id, 42])).unwrap();
        assert_eq!((r.moved, r.missing), (1, vec![42]));
        assert_eq!(depth(&c).unwrap(), 2);
        assert_eq!(dead_letter_count(&c).unwrap(), 0);
    }
}
