//! Read-only queries for the API, on a small pool of connections. Full lists are produced in
//! chunks so that the API can stream them without holding the whole answer in memory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

/// Rows read per page of a streamed list.
const LIST_PAGE_ROWS: i64 = 2000;
/// Idle read connections kept for reuse; more are opened under load and closed afterwards.
const MAX_IDLE_CONNECTIONS: usize = 8;
/// Bytes reserved for one chunk of a streamed list (a page of rows; it grows if need be).
const LIST_CHUNK_BYTES: usize = 192 * 1024;

/// Which full list to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    IpAddresses,
    /// Dialled numbers only (see `store::numbers`).
    Numbers,
    /// Every called value: numbers, user names, `NOT_FOUND`.
    CalledValues,
    /// Accounts requests tried to log in as (`sentrypeer_usernames`).
    Usernames,
}

/// Every called value is in one of two partial indexes, dialled numbers or the rest (see
/// `store::numbers`), so a value seen again updates one list index, not two. `?all=true`
/// reads both, merged newest first by SQLite (each half already in order: no sorting).
fn called_values_sql(recent: &str) -> (String, String, String) {
    let half = |which: &str, cursor: &str| {
        format!(
            "SELECT called_number, seen_last, seen_count FROM sentrypeer_numbers
             WHERE {which} AND {recent}{cursor}"
        )
    };
    let count = |which: &str| {
        format!("(SELECT count(*) FROM sentrypeer_numbers WHERE {which} AND {recent})")
    };
    let both = |cursor: &str| {
        format!(
            "{} UNION ALL {} ORDER BY seen_last DESC, called_number DESC LIMIT :limit",
            half(DIALLED, cursor),
            half(OTHER, cursor)
        )
    };
    const CURSOR: &str = " AND (seen_last, called_number) < (:last, :key)";
    (
        format!("SELECT {} + {}", count(DIALLED), count(OTHER)),
        both(""),
        both(CURSOR),
    )
}

/// The rules of the two partial indexes of called values (`store::numbers`), as a query must
/// say them for SQLite to read the index.
const DIALLED: &str = "dialled = 1";
const OTHER: &str = "dialled = 0";

impl ListKind {
    /// (count, first page, next page after a `(seen_last, key)` cursor), newest first, of the
    /// actors listed now: seen here or corroborated since `:cutoff` (now less the TTL), and not
    /// excluded (allowlisted, this node's own, not a number). `?all=true` lists every called
    /// value seen since the cutoff.
    ///
    /// Dialled numbers are read from their own partial index (`store::numbers`), so a page of
    /// them skips nothing and costs what a page of every value costs.
    fn sql(self) -> (String, String, String) {
        const RECENT: &str = "(local_last_ms > :cutoff OR corroborated_ms > :cutoff)";
        let (table, key, filter) = match self {
            ListKind::IpAddresses => (
                "sentrypeer_ip_addresses",
                "ip_address",
                format!("{RECENT} AND excluded = 0"),
            ),
            ListKind::Numbers => (
                "sentrypeer_numbers",
                "called_number",
                format!("{DIALLED} AND {RECENT} AND excluded = 0"),
            ),
            ListKind::CalledValues => return called_values_sql(RECENT),
            ListKind::Usernames => (
                "sentrypeer_usernames",
                "username",
                "seen_last_ms > :cutoff".to_string(),
            ),
        };
        (
            format!("SELECT count(*) FROM {table} WHERE {filter}"),
            format!(
                "SELECT {key}, seen_last, seen_count FROM {table} WHERE {filter}
                 ORDER BY seen_last DESC, {key} DESC LIMIT :limit"
            ),
            format!(
                "SELECT {key}, seen_last, seen_count FROM {table}
                 WHERE (seen_last, {key}) < (:last, :key) AND {filter}
                 ORDER BY seen_last DESC, {key} DESC LIMIT :limit"
            ),
        )
    }

    /// (total key, list key, item key) as upstream names them.
    fn keys(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ListKind::IpAddresses => ("ip_addresses_total", "ip_addresses", "ip_address"),
            ListKind::Numbers | ListKind::CalledValues => {
                ("called_numbers_total", "called_numbers", "called_number")
            }
            ListKind::Usernames => ("usernames_total", "usernames", "username"),
        }
    }
}

/// Read-only connections to the database, reused across requests.
#[derive(Debug)]
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a pooled connection.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let conn = self.idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match conn {
            Some(c) => c,
            None => super::open_read_only(&self.path)?,
        };
        let out = f(&conn);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(conn);
            }
        }
        out
    }

    /// Whether this address was ever seen.
    pub fn ip_seen(&self, ip: &str) -> rusqlite::Result<bool> {
        self.with(|c| {
            c.prepare_cached("SELECT 1 FROM sentrypeer_ip_addresses WHERE ip_address = ?1")?
                .exists([ip])
        })
    }

    /// Whether this number was ever called.
    pub fn number_seen(&self, number: &str) -> rusqlite::Result<bool> {
        self.with(|c| {
            c.prepare_cached("SELECT 1 FROM sentrypeer_numbers WHERE called_number = ?1")?
                .exists([number])
        })
    }

    /// Produces the whole list as upstream's JSON document, newest first, in chunks handed to
    /// `emit`; stops early when `emit` returns false (the client went away).
    pub fn write_list(
        &self,
        kind: ListKind,
        mut emit: impl FnMut(Vec<u8>) -> bool,
    ) -> rusqlite::Result<()> {
        let mut list = ListCursor::new(kind, i64::MIN);
        while let Some(chunk) = list.next_chunk(self)? {
            if !emit(chunk) {
                break;
            }
        }
        Ok(())
    }
}

/// A full list produced a page at a time: each [`ListCursor::next_chunk`] is one short read, so
/// nothing (no thread, no transaction, no WAL snapshot) is held between chunks while a client
/// reads. An entry seen again while the list streams moves ahead of the cursor and shows next
/// time.
#[derive(Debug)]
pub struct ListCursor {
    kind: ListKind,
    /// Listed means seen since this (ms since the epoch): now less the TTL.
    cutoff_ms: i64,
    /// `(seen_last, key)` of the last entry sent.
    after: Option<(String, String)>,
    started: bool,
    finished: bool,
}

impl ListCursor {
    /// A list of the actors seen since `cutoff_ms` (now less the TTL; `i64::MIN` for ever).
    pub fn new(kind: ListKind, cutoff_ms: i64) -> Self {
        Self {
            kind,
            cutoff_ms,
            after: None,
            started: false,
            finished: false,
        }
    }

    /// The next part of the JSON document (at most one page of rows), or `None` once it is
    /// complete. After an error the list is over.
    pub fn next_chunk(&mut self, store: &ReadPool) -> rusqlite::Result<Option<Vec<u8>>> {
        if self.finished {
            return Ok(None);
        }
        let r = self.read_chunk(store);
        if r.is_err() {
            self.finished = true;
        }
        r.map(Some)
    }

    fn read_chunk(&mut self, store: &ReadPool) -> rusqlite::Result<Vec<u8>> {
        let (count_sql, first_sql, next_sql) = self.kind.sql();
        let (total_key, list_key, item_key) = self.kind.keys();
        let mut buf = Vec::with_capacity(LIST_CHUNK_BYTES + 1024);
        if !self.started {
            let total: i64 = store.with(|c| {
                c.query_row(
                    &count_sql,
                    rusqlite::named_params! {":cutoff": self.cutoff_ms},
                    |r| r.get(0),
                )
            })?;
            buf.extend_from_slice(format!("{{\"{total_key}\":{total},\"{list_key}\":[").as_bytes());
        }
        let page = store.with(|c| {
            let mut stmt = c.prepare_cached(if self.after.is_some() {
                &next_sql
            } else {
                &first_sql
            })?;
            let cutoff = self.cutoff_ms;
            let mut rows = match &self.after {
                Some((last, key)) => stmt.query(rusqlite::named_params! {
                    ":limit": LIST_PAGE_ROWS, ":last": last, ":key": key, ":cutoff": cutoff,
                })?,
                None => stmt.query(rusqlite::named_params! {
                    ":limit": LIST_PAGE_ROWS, ":cutoff": cutoff,
                })?,
            };
            let mut page = Vec::with_capacity(LIST_PAGE_ROWS as usize);
            while let Some(row) = rows.next()? {
                page.push((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ));
            }
            Ok(page)
        })?;
        for (value, seen_last, count) in &page {
            if std::mem::replace(&mut self.started, true) {
                buf.push(b',');
            }
            buf.extend_from_slice(b"{\"");
            buf.extend_from_slice(item_key.as_bytes());
            buf.extend_from_slice(b"\":");
            push_json_str(&mut buf, value);
            buf.extend_from_slice(b",\"seen_last\":");
            push_json_str(&mut buf, seen_last);
            buf.extend_from_slice(format!(",\"seen_count\":\"{count}\"}}").as_bytes());
        }
        self.started = true;
        if (page.len() as i64) < LIST_PAGE_ROWS {
            buf.extend_from_slice(b"]}");
            self.finished = true;
        } else if let Some((value, seen_last, _)) = page.into_iter().next_back() {
            self.after = Some((seen_last, value));
        }
        Ok(buf)
    }
}

fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database holding `n` numbers, and the list document read back in chunks.
    fn list_of(n: i64) -> (serde_json::Value, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(super::super::open(&path).unwrap());
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute(
                "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1)
                 INSERT INTO sentrypeer_numbers (called_number, seen_last, seen_count, local_last_ms,
                   dialled)
                 SELECT printf('%06d', i), printf('2026-11-23 10:%02d:%02d.000000000', i / 60 % 60, i % 60), i, i, 1
                 FROM k WHERE ?1 > 0",
                [n],
            )
            .unwrap();
        let pool = ReadPool::new(&path);
        let mut doc = Vec::new();
        let mut chunks = 0;
        pool.write_list(ListKind::Numbers, |c| {
            chunks += 1;
            doc.extend_from_slice(&c);
            true
        })
        .unwrap();
        (serde_json::from_slice(&doc).unwrap(), chunks)
    }

    #[test]
    fn lists_are_whole_across_page_boundaries() {
        for (n, pages) in [(0, 1), (1, 1), (1999, 1), (2000, 2), (2001, 2), (4500, 3)] {
            let (v, chunks) = list_of(n);
            assert_eq!(chunks, pages, "{n} rows");
            assert_eq!(v["called_numbers_total"], n, "{n} rows");
            let list = v["called_numbers"].as_array().unwrap();
            assert_eq!(list.len() as i64, n);
            // Newest first, each once.
            let seen: std::collections::HashSet<&str> = list
                .iter()
                .map(|e| e["called_number"].as_str().unwrap())
                .collect();
            assert_eq!(seen.len() as i64, n);
            assert!(list.windows(2).all(|w| {
                (w[0]["seen_last"].as_str(), w[0]["called_number"].as_str())
                    >= (w[1]["seen_last"].as_str(), w[1]["called_number"].as_str())
            }));
        }
    }

    /// The list document of `kind` read back in chunks from a database holding `values` as
    /// called values, the first the newest.
    fn called_list(values: &[String], kind: ListKind) -> (serde_json::Value, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(super::super::open(&path).unwrap());
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for (i, v) in values.iter().enumerate() {
            tx.execute(
                "INSERT INTO sentrypeer_numbers (called_number, seen_last, seen_count, local_last_ms,
                   excluded, dialled) VALUES (?1, printf('2026-11-23 %09d', ?2), 1, 1, ?3, NOT ?3)",
                rusqlite::params![
                    v,
                    1_000_000 - i as i64,
                    !crate::actors::is_dialled_number(v)
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let mut doc = Vec::new();
        let mut chunks = 0;
        ReadPool::new(&path)
            .write_list(kind, |c| {
                chunks += 1;
                doc.extend_from_slice(&c);
                true
            })
            .unwrap();
        (serde_json::from_slice(&doc).unwrap(), chunks)
    }

    fn listed(doc: &serde_json::Value) -> Vec<&str> {
        doc["called_numbers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["called_number"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_numbers_list_holds_dialled_numbers_only_and_the_whole_list_every_value() {
        let values: Vec<String> = [
            "+4420",
            "0044",
            "admin",
            "100a",
            "NOT_FOUND",
            "alice",
            "100",
        ]
        .map(String::from)
        .to_vec();
        let (numbers, _) = called_list(&values, ListKind::Numbers);
        assert_eq!(listed(&numbers), ["+4420", "0044", "100"]);
        assert_eq!(numbers["called_numbers_total"], 3);
        let (all, _) = called_list(&values, ListKind::CalledValues);
        assert_eq!(listed(&all), values);
        assert_eq!(all["called_numbers_total"], 7);
    }

    #[test]
    fn the_numbers_list_pages_past_what_it_skips() {
        // Every third value a user name: the pages of dialled numbers skip them, and a run of
        // 3,000 user names in the middle fills no page at all.
        let mut values: Vec<String> = (0..4500)
            .map(|i| match i % 3 {
                0 => format!("user{i}"),
                1 => format!("00{i}"),
                _ => format!("+{i}"),
            })
            .collect();
        values.splice(2000..2000, (0..3000).map(|i| format!("{i}a")));
        let (doc, chunks) = called_list(&values, ListKind::Numbers);
        let expected: Vec<&str> = values
            .iter()
            .map(String::as_str)
            .filter(|v| super::super::is_dialled_number(v))
            .collect();
        assert_eq!(expected.len(), 3000);
        assert_eq!(listed(&doc), expected);
        assert_eq!(doc["called_numbers_total"], 3000);
        assert_eq!(chunks, 2);
        let (all, chunks) = called_list(&values, ListKind::CalledValues);
        assert_eq!(listed(&all), values);
        assert_eq!(all["called_numbers_total"], 7500);
        assert_eq!(chunks, 4);
    }

    /// The rule costs nothing per row only while SQLite reads the partial index for it, and
    /// every list's total reads its index alone (no table rows).
    #[test]
    fn the_numbers_list_and_its_total_read_the_index_of_dialled_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(super::super::open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        let plan_of = |sql: &str, params: usize| -> Vec<String> {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let params: Vec<rusqlite::types::Value> = (0..params)
                .map(|_| rusqlite::types::Value::Text("1".into()))
                .collect();
            stmt.query_map(rusqlite::params_from_iter(params), |r| r.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        for (kind, index) in [
            (ListKind::Numbers, "sentrypeer_numbers_listed_dialled"),
            (ListKind::CalledValues, "sentrypeer_numbers_listed_dialled"),
            (ListKind::CalledValues, "sentrypeer_numbers_listed_other"),
            (ListKind::IpAddresses, "sentrypeer_ip_addresses_listed"),
        ] {
            let (count, ..) = kind.sql();
            let plan = plan_of(&count, 1);
            assert!(
                plan.iter()
                    .any(|step| step.contains(&format!("COVERING INDEX {index}"))),
                "{count}: {plan:?}"
            );
        }
        // Every called value: the two indexes merged in order; only entries that share a
        // `seen_last` are put in key order (as for one index), nothing else is sorted.
        let (_, first, next) = ListKind::CalledValues.sql();
        for (sql, params) in [(first, 2), (next, 4)] {
            let plan = plan_of(&sql, params);
            for index in [
                "sentrypeer_numbers_listed_dialled",
                "sentrypeer_numbers_listed_other",
            ] {
                assert!(
                    plan.iter().any(|step| step.contains(index)),
                    "{sql}: {plan:?}"
                );
            }
            assert!(
                !plan
                    .iter()
                    .any(|step| step.contains("TEMP B-TREE FOR ORDER BY")),
                "{sql}: {plan:?}"
            );
        }
        let (count, first, next) = ListKind::Numbers.sql();
        for (sql, params) in [(count, 1), (first, 2), (next, 4)] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let params: Vec<rusqlite::types::Value> = (0..params)
                .map(|_| rusqlite::types::Value::Text("1".into()))
                .collect();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(params), |r| r.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(
                plan.iter()
                    .any(|step| step.contains("INDEX sentrypeer_numbers_listed_dialled")),
                "{sql}: {plan:?}"
            );
        }
    }

    #[test]
    fn a_list_ends_after_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // No database there: the first read fails, and the list is over.
        let pool = ReadPool::new(&dir.path().join("missing.db"));
        let mut list = ListCursor::new(ListKind::IpAddresses, i64::MIN);
        assert!(list.next_chunk(&pool).is_err());
        assert!(list.next_chunk(&pool).unwrap().is_none());
    }
}
