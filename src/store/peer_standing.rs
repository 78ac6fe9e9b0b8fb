//! The peer network's standing, kept across restarts (`sentrypeer_peer_standing`): one row per
//! peer that was admitted to a grace period or has written events new to this node, so that a
//! restart neither hands every peer a fresh grace period nor forgets who contributes.
//!
//! Written by the peer network's task through a connection of its own, in one short
//! transaction every minute or so and at shutdown; never on the path of an event. Times are
//! milliseconds since the Unix epoch. The table holds at most the number of rows its writer
//! asks for: contributors are kept first (most recent first), then the most recently seen.

use rusqlite::{Connection, params};

/// Created with the rest of our schema (`store::open`).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sentrypeer_peer_standing (peer_id TEXT PRIMARY KEY NOT NULL,
  first_seen_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL, grace_from_ms INTEGER,
  events_authored INTEGER NOT NULL DEFAULT 0, last_authored_ms INTEGER, node_id TEXT) WITHOUT ROWID;
";

/// One peer's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedPeer {
    pub peer_id: String,
    /// When this node first met it.
    pub first_seen_ms: i64,
    /// When it was last connected.
    pub last_seen_ms: i64,
    /// When its grace period began; `None` if it was never given one.
    pub grace_from_ms: Option<i64>,
    /// New valid events it wrote.
    pub events_authored: u64,
    /// When it last wrote one.
    pub last_authored_ms: Option<i64>,
    /// The node id its signed events carry.
    pub node_id: Option<String>,
}

/// Rows in the order they are kept: contributors (most recent first), then the most recently
/// seen. At most `limit`.
pub fn load(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<SavedPeer>> {
    let mut stmt = conn.prepare(
        "SELECT peer_id, first_seen_ms, last_seen_ms, grace_from_ms, events_authored,
           last_authored_ms, node_id
         FROM sentrypeer_peer_standing
         ORDER BY last_authored_ms IS NULL, last_authored_ms DESC, last_seen_ms DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
        Ok(SavedPeer {
            peer_id: r.get(0)?,
            first_seen_ms: r.get(1)?,
            last_seen_ms: r.get(2)?,
            grace_from_ms: r.get(3)?,
            events_authored: r.get::<_, i64>(4)?.max(0) as u64,
            last_authored_ms: r.get(5)?,
            node_id: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// Writes `rows` in one transaction, merged with what is there (the earliest first sighting and
/// grace, the latest sightings, the larger count), then keeps at most `cap` rows.
pub fn save(conn: &mut Connection, rows: &[SavedPeer], cap: usize) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO sentrypeer_peer_standing (peer_id, first_seen_ms, last_seen_ms,
               grace_from_ms, events_authored, last_authored_ms, node_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(peer_id) DO UPDATE SET
               first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
               last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
               grace_from_ms = coalesce(grace_from_ms, excluded.grace_from_ms),
               events_authored = max(events_authored, excluded.events_authored),
               last_authored_ms = max(coalesce(last_authored_ms, excluded.last_authored_ms),
                                      coalesce(excluded.last_authored_ms, last_authored_ms)),
               node_id = coalesce(excluded.node_id, node_id)",
        )?;
        for r in rows {
            upsert.execute(params![
                r.peer_id,
                r.first_seen_ms,
                r.last_seen_ms,
                r.grace_from_ms,
                i64::try_from(r.events_authored).unwrap_or(i64::MAX),
                r.last_authored_ms,
                r.node_id,
            ])?;
        }
    }
    let count: i64 = tx.query_row("SELECT count(*) FROM sentrypeer_peer_standing", [], |r| {
        r.get(0)
    })?;
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    if count > cap {
        tx.execute(
            "DELETE FROM sentrypeer_peer_standing WHERE peer_id IN (
               SELECT peer_id FROM sentrypeer_peer_standing
               ORDER BY last_authored_ms IS NULL, last_authored_ms DESC, last_seen_ms DESC
               LIMIT -1 OFFSET ?1)",
            [cap],
        )?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(crate::store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        (dir, conn)
    }

    fn row(id: &str, seen: i64, authored: Option<i64>) -> SavedPeer {
        SavedPeer {
            peer_id: id.into(),
            first_seen_ms: seen,
            last_seen_ms: seen,
            grace_from_ms: Some(seen),
            events_authored: u64::from(authored.is_some()),
            last_authored_ms: authored,
            node_id: None,
        }
    }

    #[test]
    fn rows_merge_and_come_back() {
        let (_dir, mut conn) = db();
        save(&mut conn, &[row("a", 1_000, None)], 10).unwrap();
        let mut later = row("a", 5_000, Some(4_000));
        later.grace_from_ms = None;
        later.node_id = Some("n".into());
        save(&mut conn, &[later], 10).unwrap();
        let got = load(&conn, 10).unwrap();
        assert_eq!(
            got,
            vec![SavedPeer {
                peer_id: "a".into(),
                first_seen_ms: 1_000,
                last_seen_ms: 5_000,
                grace_from_ms: Some(1_000),
                events_authored: 1,
                last_authored_ms: Some(4_000),
                node_id: Some("n".into()),
            }]
        );
    }

    #[test]
    fn the_table_keeps_contributors_first_then_the_most_recently_seen() {
        let (_dir, mut conn) = db();
        let rows = [
            row("old-contributor", 100, Some(100)),
            row("recent-listener", 9_000, None),
            row("old-listener", 200, None),
            row("contributor", 500, Some(600)),
        ];
        save(&mut conn, &rows, 3).unwrap();
        let ids: Vec<String> = load(&conn, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.peer_id)
            .collect();
        assert_eq!(ids, ["contributor", "old-contributor", "recent-listener"]);
        assert_eq!(load(&conn, 1).unwrap().len(), 1);
    }
}
