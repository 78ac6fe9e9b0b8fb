//! Read-only queries for the API, on a small pool of connections. Full lists are produced in
//! chunks so that the API can stream them without holding the whole answer in memory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

/// Rows read per page of a streamed list.
const LIST_PAGE_ROWS: i64 = 2000;
/// Idle read connections kept for reuse; more are opened under load and closed afterwards.
const MAX_IDLE_CONNECTIONS: usize = 8;
/// A streamed list is handed over in chunks of about this many bytes.
const LIST_CHUNK_BYTES: usize = 64 * 1024;

/// Which full list to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    IpAddresses,
    Numbers,
}

impl ListKind {
    /// (count, first page, next page after a `(seen_last, key)` cursor), newest first.
    fn sql(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ListKind::IpAddresses => (
                "SELECT count(*) FROM sentrypeer_ip_addresses",
                "SELECT ip_address, seen_last, seen_count FROM sentrypeer_ip_addresses
                 ORDER BY seen_last DESC, ip_address DESC LIMIT ?1",
                "SELECT ip_address, seen_last, seen_count FROM sentrypeer_ip_addresses
                 WHERE (seen_last, ip_address) < (?2, ?3) ORDER BY seen_last DESC, ip_address DESC LIMIT ?1",
            ),
            ListKind::Numbers => (
                "SELECT count(*) FROM sentrypeer_numbers",
                "SELECT called_number, seen_last, seen_count FROM sentrypeer_numbers
                 ORDER BY seen_last DESC, called_number DESC LIMIT ?1",
                "SELECT called_number, seen_last, seen_count FROM sentrypeer_numbers
                 WHERE (seen_last, called_number) < (?2, ?3) ORDER BY seen_last DESC, called_number DESC LIMIT ?1",
            ),
        }
    }

    /// (total key, list key, item key) as upstream names them.
    fn keys(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ListKind::IpAddresses => ("ip_addresses_total", "ip_addresses", "ip_address"),
            ListKind::Numbers => ("called_numbers_total", "called_numbers", "called_number"),
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
        let (count_sql, first_sql, next_sql) = kind.sql();
        let (total_key, list_key, item_key) = kind.keys();
        let total: i64 = self.with(|c| c.query_row(count_sql, [], |r| r.get(0)))?;
        let mut buf = Vec::with_capacity(LIST_CHUNK_BYTES + 1024);
        buf.extend_from_slice(format!("{{\"{total_key}\":{total},\"{list_key}\":[").as_bytes());
        let mut cursor: Option<(String, String)> = None;
        let mut first = true;
        loop {
            // One short read per page, never a transaction held while a client reads: a slow
            // client must not pin a WAL snapshot (the WAL could not be reset behind it). An entry
            // seen again while the list streams moves ahead of the cursor and shows next time.
            let mut page = self.with(|c| {
                let mut stmt = c.prepare_cached(if cursor.is_some() {
                    next_sql
                } else {
                    first_sql
                })?;
                let mut rows = match &cursor {
                    Some((last, key)) => {
                        stmt.query(rusqlite::params![LIST_PAGE_ROWS, last, key])?
                    }
                    None => stmt.query(rusqlite::params![LIST_PAGE_ROWS])?,
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
            let done = (page.len() as i64) < LIST_PAGE_ROWS;
            for (value, seen_last, count) in &page {
                if !std::mem::take(&mut first) {
                    buf.push(b',');
                }
                buf.extend_from_slice(b"{\"");
                buf.extend_from_slice(item_key.as_bytes());
                buf.extend_from_slice(b"\":");
                push_json_str(&mut buf, value);
                buf.extend_from_slice(b",\"seen_last\":");
                push_json_str(&mut buf, seen_last);
                buf.extend_from_slice(format!(",\"seen_count\":\"{count}\"}}").as_bytes());
                if buf.len() >= LIST_CHUNK_BYTES && !emit(std::mem::take(&mut buf)) {
                    return Ok(());
                }
            }
            if done {
                break;
            }
            cursor = page.pop().map(|(value, seen_last, _)| (seen_last, value));
        }
        buf.extend_from_slice(b"]}");
        emit(buf);
        Ok(())
    }
}

fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}
