//! Exports of the bad-actor set read a page at a time: each [`ExportCursor::next_chunk`] is one
//! short read, so a million addresses stream in bounded memory and a slow reader holds no
//! transaction. Used by the API's `/blocklist/...` and `sentrypeer export`.
//!
//! A full export walks every actor ever listed by key and writes those listed now; changes mode
//! walks the change sequence after the client's cursor. Either way the answer carries the cursor
//! it is complete up to (the newest change when it started): whatever changes while it streams
//! is in the next `since` answer too, so an incremental client never misses a change.

use std::sync::Arc;

use uuid::Uuid;

use super::ReadPool;
use super::actors::{self, ActorRow};
use crate::actors::export::{Entry, Format, Header, Writer};
use crate::actors::{Kind, Rules};

/// Actors read per page.
const PAGE_ROWS: i64 = 2000;

/// Which listings an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Listed on this node's own sightings.
    Local,
    /// Listed on any ground: own sightings, corroborated or trusted peers.
    All,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "local" => Some(Scope::Local),
            "all" => Some(Scope::All),
            _ => None,
        }
    }
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub kind: Kind,
    pub format: Format,
    pub scope: Scope,
    /// Changes after this cursor; `None`: the full list.
    pub since: Option<u64>,
    pub ipset_name: String,
}

/// An export in progress.
pub struct ExportCursor {
    req: ExportRequest,
    rules: Arc<Rules>,
    writer: Writer,
    now_ms: i64,
    /// Full mode: the last key written. Changes mode: the last change read.
    after_key: String,
    after_seq: i64,
    started: bool,
    finished: bool,
}

impl ExportCursor {
    /// Starts an export: reads the cursor it will be complete up to.
    pub fn new(
        store: &ReadPool,
        req: ExportRequest,
        rules: Arc<Rules>,
        node_id: Uuid,
    ) -> rusqlite::Result<ExportCursor> {
        let cursor = store.with(actors::current_seq)?;
        let now_ms = crate::actors::now_ms();
        let ttl_secs = match rules.ttl {
            crate::actors::Ttl::Forever => None,
            crate::actors::Ttl::For(d) => Some(d.as_secs()),
        };
        let writer = Writer::new(Header {
            kind: req.kind,
            format: req.format,
            cursor,
            since: req.since,
            now_ms,
            node_id,
            ipset_name: req.ipset_name.clone(),
            ttl_secs,
        });
        let after_seq = req.since.map_or(0, |s| s.min(i64::MAX as u64) as i64);
        Ok(ExportCursor {
            req,
            rules,
            writer,
            now_ms,
            after_key: String::new(),
            after_seq,
            started: false,
            finished: false,
        })
    }

    /// The change sequence the export is complete up to (the next request's `since`).
    pub fn cursor(&self) -> u64 {
        self.writer.header().cursor
    }

    /// The next part of the export, or `None` once it is complete. After an error it is over.
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
        let mut out = Vec::with_capacity(256 * 1024);
        if !std::mem::replace(&mut self.started, true) {
            self.writer.begin(&mut out);
        }
        let kind = self.req.kind;
        let cursor = self.cursor() as i64;
        let page: Vec<ActorRow> = match self.req.since {
            None => store.with(|c| actors::page_by_key(c, kind, &self.after_key, PAGE_ROWS))?,
            Some(_) => store
                .with(|c| actors::page_by_change(c, kind, self.after_seq, cursor, PAGE_ROWS))?,
        };
        for row in &page {
            let mut entry = row.entry(kind, &self.rules, self.now_ms);
            if self.req.scope == Scope::Local {
                let local_only = ActorRow {
                    corroborated_ms: None,
                    ..row.clone()
                };
                if let (Entry::Listed(_), removed @ Entry::Removed { .. }) =
                    (&entry, local_only.entry(kind, &self.rules, self.now_ms))
                {
                    entry = removed;
                }
            }
            match (&entry, self.req.since) {
                // A full list holds what is listed; only changes mode tells of removals.
                (Entry::Removed { .. }, None) => {}
                _ => self.writer.entry(&mut out, &entry),
            }
        }
        if let Some(last) = page.last() {
            self.after_key.clone_from(&last.key);
            self.after_seq = last.change_seq;
        }
        if (page.len() as i64) < PAGE_ROWS {
            self.writer.end(&mut out);
            self.finished = true;
        }
        Ok(out)
    }
}
