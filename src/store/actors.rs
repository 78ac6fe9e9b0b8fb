//! The bad-actor set in the database: the facts the listing rule needs, kept beside upstream's
//! per-address and per-number summaries (`sentrypeer_ip_addresses`, `sentrypeer_numbers`), and
//! the verdicts consumers read, each with the change sequence number that last changed it.
//!
//! Columns added to each summary table:
//! - `first_seen_ms`, `last_seen_ms`: first and last sighting, ms since the epoch;
//! - `local_last_ms`: the last time this node saw it itself (NULL: only peers reported it);
//! - `corroborated_ms`: from when peers' reports list it (NULL: they do not);
//! - `announced_until_ms`: the expiry consumers were last told (NULL: not listed);
//! - `change_seq`: the change that last listed, extended or removed it (0: never listed);
//! - `excluded`: 1 when the rule keeps it off the list whatever is seen of it (allowlisted,
//!   this node's own address, a value that is not a dialled number), so lists filter in SQL.
//!
//! The writer applies `actors::Rules` as it writes and announces a change only when a listing
//! starts, ends, or its expiry moves by more than the rule's slack; a sweep ends listings whose
//! time is up. Readers decide "listed now" from the facts and the clock, so a lookup is exact
//! to the millisecond even between sweeps.
//!
//! One cohesive thing over 600 lines: the schema, the writer's side and the readers' side of the
//! same columns, kept together so the meaning of each column is written once. Its tests are in
//! `actors_tests.rs`.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::actors::export::{Actor, Entry, Origin};
use crate::actors::{Facts, Kind, Rules, is_dialled_number};

/// Our tables for the set: the change counter, and each peer author's latest report per actor.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sentrypeer_actor_state (id INTEGER PRIMARY KEY CHECK (id = 1),
  change_seq INTEGER NOT NULL, rules TEXT NOT NULL DEFAULT '');
INSERT OR IGNORE INTO sentrypeer_actor_state (id, change_seq) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS sentrypeer_actor_reports (kind INTEGER NOT NULL, key TEXT NOT NULL,
  author TEXT NOT NULL, last_ms INTEGER NOT NULL, PRIMARY KEY (kind, key, author)) WITHOUT ROWID;
";

/// The columns added to both summary tables.
const COLUMNS: [&str; 7] = [
    "first_seen_ms",
    "last_seen_ms",
    "local_last_ms",
    "corroborated_ms",
    "announced_until_ms",
    "change_seq",
    "excluded",
];

/// Peer authors remembered per actor: enough for any sane corroboration threshold; a bound so a
/// swarm of identities reporting one address cannot grow the table without end.
pub const MAX_AUTHORS_PER_ACTOR: i64 = 16;

/// Rows handled per step of a sweep or re-evaluation, so the writer's transactions stay short.
const STEP_ROWS: i64 = 5_000;

/// Milliseconds since the epoch of a stored `event_timestamp` (ours: UTC with nanoseconds;
/// upstream's: local time, nanoseconds unpadded), in SQL.
const TS_MS_SQL: &str =
    "CAST(round((julianday(substr(ts, 1, 23)) - 2440587.5) * 86400000.0) AS INTEGER)";

/// A sighting of an actor the summary holds: added to its summary and facts. A plain update of
/// one row by its key: no statement journal and no result table, which an upsert with
/// `RETURNING` needs (SQLite runs `RETURNING` as a trigger): a third of the upsert's time in a
/// flood of distinct numbers.
macro_rules! update_sql {
    ($t:literal, $col:literal) => {
        concat!(
            "UPDATE ",
            $t,
            " SET seen_last = max(seen_last, ?2), seen_count = seen_count + ?3,
               first_seen_ms = min(coalesce(first_seen_ms, ?4), ?4),
               last_seen_ms = max(coalesce(last_seen_ms, ?5), ?5),
               local_last_ms = max(coalesce(local_last_ms, ?6), coalesce(?6, local_last_ms)),
               excluded = ?7
             WHERE ",
            $col,
            " = ?1"
        )
    };
}
/// A new actor, with its verdict (and, for a called value, whether it is a dialled number:
/// `store::numbers`).
macro_rules! insert_sql {
    ($t:literal, $col:literal, $more_cols:literal, $more_values:literal) => {
        concat!(
            "INSERT INTO ",
            $t,
            " (",
            $col,
            ", seen_last, seen_count, first_seen_ms, last_seen_ms,
               local_last_ms, excluded, announced_until_ms, change_seq",
            $more_cols,
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9",
            $more_values,
            ")"
        )
    };
}
/// What the verdict of an updated actor needs.
macro_rules! facts_sql {
    ($t:literal, $col:literal) => {
        concat!(
            "SELECT local_last_ms, corroborated_ms, announced_until_ms FROM ",
            $t,
            " WHERE ",
            $col,
            " = ?1"
        )
    };
}
/// Update, insert and facts SQL of each kind: constants, so the statement cache finds them
/// without formatting.
const IP_SQL: [&str; 3] = [
    update_sql!("sentrypeer_ip_addresses", "ip_address"),
    insert_sql!("sentrypeer_ip_addresses", "ip_address", "", ""),
    facts_sql!("sentrypeer_ip_addresses", "ip_address"),
];
const NUMBER_SQL: [&str; 3] = [
    update_sql!("sentrypeer_numbers", "called_number"),
    insert_sql!("sentrypeer_numbers", "called_number", ", dialled", ", ?10"),
    facts_sql!("sentrypeer_numbers", "called_number"),
];

/// One kind's statements for [`ActorWriter::upsert`], prepared once per write of the summaries
/// (looking each up in the statement cache hashes its SQL: once per actor, that was a few
/// percent of a flood).
pub(crate) struct Upsert<'c> {
    kind: Kind,
    update: rusqlite::CachedStatement<'c>,
    insert: rusqlite::CachedStatement<'c>,
    facts: rusqlite::CachedStatement<'c>,
}

impl<'c> Upsert<'c> {
    pub(crate) fn prepare(tx: &'c Transaction<'_>, kind: Kind) -> rusqlite::Result<Self> {
        let [update, insert, facts] = match kind {
            Kind::Ip => IP_SQL,
            Kind::Number => NUMBER_SQL,
        };
        Ok(Self {
            kind,
            update: tx.prepare_cached(update)?,
            insert: tx.prepare_cached(insert)?,
            facts: tx.prepare_cached(facts)?,
        })
    }
}

/// Table, key column and stored kind number of each kind.
pub(crate) fn table(kind: Kind) -> (&'static str, &'static str, i64) {
    match kind {
        Kind::Ip => ("sentrypeer_ip_addresses", "ip_address", 0),
        Kind::Number => ("sentrypeer_numbers", "called_number", 1),
    }
}

/// Adds the set's columns and indexes; on a database that had none, fills the facts from
/// `honey` (events with no `received_from_peer` are this node's own sightings). Returns whether
/// the columns were new.
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<bool> {
    conn.execute_batch(SCHEMA)?;
    let mut added = false;
    for kind in [Kind::Ip, Kind::Number] {
        let (t, _, _) = table(kind);
        let have: HashSet<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))?
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        for c in COLUMNS {
            if !have.contains(c) {
                let ty = if c == "change_seq" || c == "excluded" {
                    "INTEGER NOT NULL DEFAULT 0"
                } else {
                    "INTEGER"
                };
                conn.execute_batch(&format!("ALTER TABLE {t} ADD COLUMN {c} {ty}"))?;
                added = true;
            }
        }
        // `{t}_listed` serves the lists newest first and covers their filter (seen here or
        // corroborated since the cutoff, not excluded), so a list's total is a count of index
        // entries that reads no table rows (11 ms for 250,000 numbers; with the rows, 300 ms and
        // every page of the table mapped into the reader). It replaces a plain `seen_last` index.
        // Called values have two such indexes instead, dialled numbers and the rest
        // (`store::numbers::create_index`).
        conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS {t}_change ON {t} (change_seq) WHERE change_seq > 0;
             CREATE INDEX IF NOT EXISTS {t}_announced ON {t} (announced_until_ms)
               WHERE announced_until_ms IS NOT NULL;
             DROP INDEX IF EXISTS {t}_seen_last;"
        ))?;
        if kind == Kind::Ip {
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS {t}_listed
                   ON {t} (seen_last, local_last_ms, corroborated_ms, excluded);"
            ))?;
        }
    }
    if added {
        backfill(conn, None)?;
    }
    Ok(added)
}

/// Fills first/last/local sightings and peer reports from `honey` rows (all, or those past
/// `after_honey_id`), for databases written before the set existed or by upstream.
pub(crate) fn backfill(conn: &Connection, after_honey_id: Option<i64>) -> rusqlite::Result<()> {
    let after = after_honey_id.unwrap_or(0);
    let ip = super::NORMALISED_IP_SQL;
    for kind in [Kind::Ip, Kind::Number] {
        let (t, col, k) = table(kind);
        let key = match kind {
            Kind::Ip => ip.to_string(),
            Kind::Number => "called_number".to_string(),
        };
        conn.execute(
            &format!(
                "UPDATE {t} SET
                   first_seen_ms = min(coalesce(first_seen_ms, f.first), f.first),
                   last_seen_ms = max(coalesce(last_seen_ms, f.last), f.last),
                   local_last_ms = CASE WHEN f.local IS NULL THEN local_last_ms
                     ELSE max(coalesce(local_last_ms, f.local), f.local) END
                 FROM (SELECT k, min({TS_MS_SQL}) AS first, max({TS_MS_SQL}) AS last,
                         max(CASE WHEN peer IS NULL THEN {TS_MS_SQL} END) AS local
                       FROM (SELECT {key} AS k, coalesce(event_timestamp, '') AS ts,
                               received_from_peer AS peer FROM honey WHERE honey_id > ?1)
                       WHERE k IS NOT NULL GROUP BY k) AS f
                 WHERE {t}.{col} = f.k"
            ),
            [after],
        )?;
        conn.execute(
            &format!(
                "INSERT INTO sentrypeer_actor_reports (kind, key, author, last_ms)
                 SELECT {k}, k, peer, max({TS_MS_SQL}) FROM
                   (SELECT {key} AS k, coalesce(event_timestamp, '') AS ts, received_from_peer AS peer
                    FROM honey WHERE honey_id > ?1 AND received_from_peer IS NOT NULL)
                 WHERE k IS NOT NULL GROUP BY k, peer
                 ON CONFLICT (kind, key, author) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)"
            ),
            [after],
        )?;
    }
    Ok(())
}

/// An actor whose announced expiry has passed: key, local and corroborated times, and the
/// expiry announced.
type DueRow = (String, Option<i64>, Option<i64>, Option<i64>);

/// What the writer saw of one actor since it last wrote the summaries (one batch, or several
/// while it is behind).
#[derive(Debug, Clone)]
pub(crate) struct Sighting {
    /// The newest `event_timestamp` (upstream's `seen_last`).
    pub ts: String,
    pub count: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// The newest local sighting, if any of the events was captured here.
    pub local_ms: Option<i64>,
    /// Peer authors and their newest report time.
    pub authors: Vec<(Box<str>, i64)>,
}

impl Sighting {
    pub(crate) fn new(ts: &str, ms: i64) -> Self {
        Sighting {
            ts: ts.to_owned(),
            count: 0,
            first_ms: ms,
            last_ms: ms,
            local_ms: None,
            authors: Vec::new(),
        }
    }

    /// Takes in a later sighting of the same actor.
    pub(crate) fn merge(&mut self, later: &Sighting) {
        if later.ts > self.ts {
            self.ts.clone_from(&later.ts);
        }
        self.count += later.count;
        self.first_ms = self.first_ms.min(later.first_ms);
        self.last_ms = self.last_ms.max(later.last_ms);
        self.local_ms = self.local_ms.max(later.local_ms);
        for (a, ms) in &later.authors {
            match self.authors.iter_mut().find(|(x, _)| x == a) {
                Some(slot) => slot.1 = slot.1.max(*ms),
                None => self.authors.push((a.clone(), *ms)),
            }
        }
    }

    /// Adds one event: its timestamp, time, and author (`None`: captured here).
    pub(crate) fn add(&mut self, ts: &str, ms: i64, author: Option<&str>) {
        if ts > self.ts.as_str() {
            // Timestamps have one length: the buffer is reused, not reallocated.
            self.ts.clear();
            self.ts.push_str(ts);
        }
        self.count += 1;
        self.first_ms = self.first_ms.min(ms);
        self.last_ms = self.last_ms.max(ms);
        match author {
            None => self.local_ms = Some(self.local_ms.map_or(ms, |l| l.max(ms))),
            Some(a) => match self.authors.iter_mut().find(|(x, _)| &**x == a) {
                Some(slot) => slot.1 = slot.1.max(ms),
                None => self.authors.push((a.into(), ms)),
            },
        }
    }
}

/// The writer's side: applies the rule to every actor a batch touches.
#[derive(Debug)]
pub(crate) struct ActorWriter {
    /// The last change sequence number handed out (persisted with each transaction that used one).
    seq: i64,
    seq_dirty: bool,
}

impl ActorWriter {
    pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let seq = conn.query_row(
            "SELECT change_seq FROM sentrypeer_actor_state WHERE id = 1",
            [],
            |r| r.get(0),
        )?;
        Ok(ActorWriter {
            seq,
            seq_dirty: false,
        })
    }

    /// The last change sequence number handed out.
    pub(crate) fn seq(&self) -> i64 {
        self.seq
    }

    /// Ends an actor's listing at once (an address found to be this node's own).
    pub(crate) fn unlist(
        &mut self,
        tx: &Transaction<'_>,
        kind: Kind,
        key: &str,
    ) -> rusqlite::Result<()> {
        set_excluded(tx, kind, key, true)?;
        if let Some(row) = get(tx, kind, key)? {
            if row.announced_until_ms.is_some() {
                self.announce(tx, kind, key, None, row.announced_until_ms, 1)?;
            }
        }
        Ok(())
    }

    fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq_dirty = true;
        self.seq
    }

    /// Persists the counter if this transaction used it.
    pub(crate) fn finish(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if std::mem::take(&mut self.seq_dirty) {
            tx.execute(
                "UPDATE sentrypeer_actor_state SET change_seq = ?1 WHERE id = 1",
                [self.seq],
            )?;
        }
        Ok(())
    }

    /// Records a batch's sighting of one actor (summary and facts) and announces a change of
    /// its listing if there is one.
    pub(crate) fn upsert(
        &mut self,
        tx: &Transaction<'_>,
        stmts: &mut Upsert<'_>,
        key: &str,
        s: &Sighting,
        rules: &Rules,
    ) -> rusqlite::Result<()> {
        let kind = stmts.kind;
        let is_excluded = excluded(kind, key, rules);
        // The update's parameters; the insert's are the same and the verdict.
        let sighting: [&dyn rusqlite::ToSql; 7] = [
            &key,
            &s.ts,
            &s.count,
            &s.first_ms,
            &s.last_ms,
            &s.local_ms,
            &is_excluded,
        ];
        let updated = stmts.update.execute(&sighting[..])? > 0;
        let (local, mut corroborated, announced) = if updated {
            stmts
                .facts
                .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        } else {
            // New (most actors of a flood are): inserted with its verdict.
            let until = rules.listed_until(Facts {
                excluded: is_excluded,
                local_last_ms: s.local_ms,
                corroborated_ms: None,
            });
            let seq = if until.is_some() { self.next_seq() } else { 0 };
            let dialled = kind == Kind::Number && crate::actors::is_dialled_number(key);
            let verdict: [&dyn rusqlite::ToSql; 3] = [&until, &seq, &dialled];
            let verdict = match kind {
                Kind::Ip => &verdict[..2],
                Kind::Number => &verdict[..],
            };
            stmts
                .insert
                .execute(rusqlite::params_from_iter(sighting.iter().chain(verdict)))?;
            if s.authors.is_empty() {
                return Ok(());
            }
            (s.local_ms, None, until)
        };
        if !s.authors.is_empty() {
            corroborated = self.report(tx, kind, key, &s.authors, rules)?;
        }
        let facts = Facts {
            excluded: is_excluded,
            local_last_ms: local,
            corroborated_ms: corroborated,
        };
        let slack = rules.ttl.extension_slack_ms();
        self.announce(tx, kind, key, rules.listed_until(facts), announced, slack)?;
        Ok(())
    }

    /// Stores peer authors' reports (keeping the newest few per actor) and returns from when
    /// they list the actor, which is also stored.
    fn report(
        &mut self,
        tx: &Transaction<'_>,
        kind: Kind,
        key: &str,
        authors: &[(Box<str>, i64)],
        rules: &Rules,
    ) -> rusqlite::Result<Option<i64>> {
        let (t, col, k) = table(kind);
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO sentrypeer_actor_reports (kind, key, author, last_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, key, author) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)",
            )?;
            for (author, ms) in authors {
                put.execute(params![k, key, &**author, ms])?;
            }
        }
        let reports = reports(tx, k, key)?;
        if reports.len() as i64 > MAX_AUTHORS_PER_ACTOR {
            tx.prepare_cached(
                "DELETE FROM sentrypeer_actor_reports WHERE kind = ?1 AND key = ?2 AND author NOT IN
                   (SELECT author FROM sentrypeer_actor_reports WHERE kind = ?1 AND key = ?2
                    ORDER BY last_ms DESC LIMIT ?3)",
            )?
            .execute(params![k, key, MAX_AUTHORS_PER_ACTOR])?;
        }
        let since = rules.corroborated_since(reports.iter().map(|(a, t)| (a.as_str(), *t)));
        tx.prepare_cached(&format!(
            "UPDATE {t} SET corroborated_ms = ?2 WHERE {col} = ?1"
        ))?
        .execute(params![key, since])?;
        Ok(since)
    }

    /// Announces a listing that starts, moves by more than the slack, or ends.
    fn announce(
        &mut self,
        tx: &Transaction<'_>,
        kind: Kind,
        key: &str,
        wanted: Option<i64>,
        announced: Option<i64>,
        slack_ms: i64,
    ) -> rusqlite::Result<bool> {
        let due = match (wanted, announced) {
            (None, None) => false,
            (Some(w), Some(a)) => w.saturating_sub(a) >= slack_ms || w < a,
            _ => true,
        };
        if !due {
            return Ok(false);
        }
        let (t, col, _) = table(kind);
        let seq = self.next_seq();
        tx.prepare_cached(&format!(
            "UPDATE {t} SET announced_until_ms = ?2, change_seq = ?3 WHERE {col} = ?1"
        ))?
        .execute(params![key, wanted, seq])?;
        Ok(true)
    }

    /// Ends listings whose time is up (or extends those seen again since their last
    /// announcement): at most `STEP_ROWS` per kind per call. Returns how many changed.
    pub(crate) fn sweep(
        &mut self,
        tx: &Transaction<'_>,
        rules: &Rules,
        now_ms: i64,
    ) -> rusqlite::Result<u64> {
        let mut changed = 0;
        for kind in [Kind::Ip, Kind::Number] {
            let (t, col, _) = table(kind);
            let due: Vec<DueRow> = tx
                .prepare_cached(&format!(
                    "SELECT {col}, local_last_ms, corroborated_ms, announced_until_ms FROM {t}
                     WHERE announced_until_ms IS NOT NULL AND announced_until_ms <= ?1 LIMIT ?2"
                ))?
                .query_map(params![now_ms, STEP_ROWS], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            for (key, local, corroborated, announced) in due {
                let facts = Facts {
                    excluded: excluded(kind, &key, rules),
                    local_last_ms: local,
                    corroborated_ms: corroborated,
                };
                let wanted = rules.listed_until(facts).filter(|w| *w > now_ms);
                // Due now: any later expiry is announced, however close.
                if self.announce(tx, kind, &key, wanted, announced, 1)? {
                    changed += 1;
                }
            }
        }
        Ok(changed)
    }

    /// Applies the rule afresh to every actor after the rule changed (TTL, allowlist,
    /// corroboration, trusted peers): `after` is the key to resume after, per kind; returns the
    /// next position, or `None` when done.
    pub(crate) fn reevaluate_step(
        &mut self,
        tx: &Transaction<'_>,
        rules: &Rules,
        now_ms: i64,
        pos: ReevaluatePos,
    ) -> rusqlite::Result<Option<ReevaluatePos>> {
        let (t, col, k) = table(pos.kind);
        let rows: Vec<(String, Option<i64>, Option<i64>)> = tx
            .prepare_cached(&format!(
                "SELECT {col}, local_last_ms, announced_until_ms FROM {t}
                 WHERE {col} > ?1 ORDER BY {col} LIMIT ?2"
            ))?
            .query_map(params![pos.after, STEP_ROWS], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let done = (rows.len() as i64) < STEP_ROWS;
        let last = rows.last().map(|r| r.0.clone());
        for (key, local, announced) in rows {
            let reports = reports(tx, k, &key)?;
            let corroborated =
                rules.corroborated_since(reports.iter().map(|(a, t)| (a.as_str(), *t)));
            if !reports.is_empty() {
                tx.prepare_cached(&format!(
                    "UPDATE {t} SET corroborated_ms = ?2 WHERE {col} = ?1"
                ))?
                .execute(params![key, corroborated])?;
            }
            let is_excluded = excluded(pos.kind, &key, rules);
            set_excluded(tx, pos.kind, &key, is_excluded)?;
            let facts = Facts {
                excluded: is_excluded,
                local_last_ms: local,
                corroborated_ms: corroborated,
            };
            let wanted = rules.listed_until(facts).filter(|w| *w > now_ms);
            // Re-announce every listing whose expiry differs at all: the TTL may have changed.
            let wanted_differs = wanted != announced;
            if wanted_differs {
                let (t, col, _) = table(pos.kind);
                let seq = self.next_seq();
                tx.prepare_cached(&format!(
                    "UPDATE {t} SET announced_until_ms = ?2, change_seq = ?3 WHERE {col} = ?1"
                ))?
                .execute(params![key, wanted, seq])?;
            }
        }
        Ok(match (done, pos.kind) {
            (false, kind) => Some(ReevaluatePos {
                kind,
                after: last.unwrap_or_default(),
            }),
            (true, Kind::Ip) => Some(ReevaluatePos {
                kind: Kind::Number,
                after: String::new(),
            }),
            (true, Kind::Number) => None,
        })
    }
}

/// Where a re-evaluation has got to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReevaluatePos {
    pub kind: Kind,
    pub after: String,
}

impl ReevaluatePos {
    pub(crate) fn start() -> Self {
        ReevaluatePos {
            kind: Kind::Ip,
            after: String::new(),
        }
    }
}

/// The rule's fingerprint stored last, and storing a new one.
pub(crate) fn stored_rules(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row(
        "SELECT rules FROM sentrypeer_actor_state WHERE id = 1",
        [],
        |r| r.get(0),
    )
}

pub(crate) fn store_rules(conn: &Connection, fingerprint: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE sentrypeer_actor_state SET rules = ?1 WHERE id = 1",
        [fingerprint],
    )?;
    Ok(())
}

fn reports(conn: &Connection, kind: i64, key: &str) -> rusqlite::Result<Vec<(String, i64)>> {
    conn.prepare_cached(
        "SELECT author, last_ms FROM sentrypeer_actor_reports WHERE kind = ?1 AND key = ?2",
    )?
    .query_map(params![kind, key], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

fn set_excluded(tx: &Transaction<'_>, kind: Kind, key: &str, on: bool) -> rusqlite::Result<()> {
    let (t, col, _) = table(kind);
    tx.prepare_cached(&format!("UPDATE {t} SET excluded = ?2 WHERE {col} = ?1"))?
        .execute(params![key, on])?;
    Ok(())
}

/// Whether the rule keeps this actor off the list whatever was seen of it.
fn excluded(kind: Kind, key: &str, rules: &Rules) -> bool {
    match kind {
        Kind::Ip => key.parse().map(|ip| rules.excluded(ip)).unwrap_or(true),
        Kind::Number => !is_dialled_number(key),
    }
}

/// One actor as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorRow {
    pub key: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub count: i64,
    pub local_last_ms: Option<i64>,
    pub corroborated_ms: Option<i64>,
    pub announced_until_ms: Option<i64>,
    pub change_seq: i64,
}

impl ActorRow {
    /// Until when it is listed, if it is listed at `now_ms`: from the facts and the rule in
    /// force, not from what was last announced, so a changed rule (a longer TTL, a reloaded
    /// allowlist) holds for lookups at once, before the writer has re-evaluated every actor.
    pub fn listed_until(&self, kind: Kind, rules: &Rules, now_ms: i64) -> Option<i64> {
        let facts = Facts {
            excluded: excluded(kind, &self.key, rules),
            local_last_ms: self.local_last_ms,
            corroborated_ms: self.corroborated_ms,
        };
        rules.listed_until(facts).filter(|until| *until > now_ms)
    }

    pub fn origin(&self) -> Origin {
        Origin {
            local: self.local_last_ms.is_some(),
            peers: self.corroborated_ms.is_some(),
        }
    }

    /// The export entry for this row: listed, or (in changes mode) removed.
    pub fn entry(&self, kind: Kind, rules: &Rules, now_ms: i64) -> Entry {
        match self.listed_until(kind, rules, now_ms) {
            Some(expires_ms) => Entry::Listed(Actor {
                key: self.key.clone(),
                first_seen_ms: self.first_seen_ms,
                last_seen_ms: self.last_seen_ms,
                count: self.count,
                expires_ms,
                origin: self.origin(),
            }),
            None => Entry::Removed {
                key: self.key.clone(),
                first_seen_ms: self.first_seen_ms,
            },
        }
    }
}

const ROW_COLUMNS: &str = "coalesce(first_seen_ms, 0), coalesce(last_seen_ms, 0), seen_count,
  local_last_ms, corroborated_ms, announced_until_ms, change_seq";

fn row_from(key: String, r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<ActorRow> {
    Ok(ActorRow {
        key,
        first_seen_ms: r.get(at)?,
        last_seen_ms: r.get(at + 1)?,
        count: r.get(at + 2)?,
        local_last_ms: r.get(at + 3)?,
        corroborated_ms: r.get(at + 4)?,
        announced_until_ms: r.get(at + 5)?,
        change_seq: r.get(at + 6)?,
    })
}

/// One actor, listed or not.
pub fn get(conn: &Connection, kind: Kind, key: &str) -> rusqlite::Result<Option<ActorRow>> {
    let (t, col, _) = table(kind);
    conn.prepare_cached(&format!("SELECT {ROW_COLUMNS} FROM {t} WHERE {col} = ?1"))?
        .query_row([key], |r| row_from(key.to_string(), r, 0))
        .optional()
}

/// The newest change sequence number: the cursor an export made now is complete up to.
pub fn current_seq(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT change_seq FROM sentrypeer_actor_state WHERE id = 1",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|s| s.max(0) as u64)
}

/// A page of actors by key, after `after` (listed or not: the caller applies the rule).
pub fn page_by_key(
    conn: &Connection,
    kind: Kind,
    after: &str,
    limit: i64,
) -> rusqlite::Result<Vec<ActorRow>> {
    let (t, col, _) = table(kind);
    conn.prepare_cached(&format!(
        "SELECT {col}, {ROW_COLUMNS} FROM {t}
         WHERE {col} > ?1 ORDER BY {col} LIMIT ?2"
    ))?
    .query_map(params![after, limit], |r| row_from(r.get(0)?, r, 1))?
    .collect()
}

/// A page of the actors whose listing changed after `after_seq` and up to `upto_seq`, in
/// change order.
pub fn page_by_change(
    conn: &Connection,
    kind: Kind,
    after_seq: i64,
    upto_seq: i64,
    limit: i64,
) -> rusqlite::Result<Vec<ActorRow>> {
    let (t, col, _) = table(kind);
    conn.prepare_cached(&format!(
        "SELECT {col}, {ROW_COLUMNS} FROM {t}
         WHERE change_seq > ?1 AND change_seq <= ?2 ORDER BY change_seq LIMIT ?3"
    ))?
    .query_map(params![after_seq, upto_seq, limit], |r| {
        row_from(r.get(0)?, r, 1)
    })?
    .collect()
}

/// Milliseconds since the epoch of an event timestamp (`YYYY-MM-DD HH:MM:SS[.fraction]`, UTC).
pub fn timestamp_ms(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = b.get(r)?;
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let ms = match b.get(19) {
        Some(b'.') => {
            let frac: Vec<u8> = b
                .get(20..)?
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .take(3)
                .copied()
                .collect();
            let mut v = 0i64;
            for i in 0..3 {
                v = v * 10 + frac.get(i).map_or(0, |c| i64::from(c - b'0'));
            }
            v
        }
        _ => 0,
    };
    let days = crate::event::days_from_civil(y, mo as u32, d as u32);
    Some(((days * 86_400 + h * 3600 + mi * 60 + s) * 1000) + ms)
}

#[cfg(test)]
#[path = "actors_tests.rs"]
mod tests;
