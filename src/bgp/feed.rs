//! Fills the route table from the bad-actor set: every address the rule lists now
//! (`ActorRow::listed_until`), read in full at start, then the store's changes after the last
//! cursor, and listings that end on the clock between the writer's sweeps. A reloaded
//! allowlist is applied at once to what is announced.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::actors::{Kind, Rules, now_ms};
use crate::store::ReadPool;
use crate::store::actors::{ActorRow, current_seq, page_by_change, page_by_key};

use super::table::Table;
use super::{BgpConfig, BgpStats};

/// Rows read per query.
const PAGE: i64 = 5000;

pub(super) struct Feed {
    pub config: Arc<BgpConfig>,
    pub stats: Arc<BgpStats>,
    pub rules: Arc<Rules>,
    pub store: Arc<ReadPool>,
    pub table: Arc<Mutex<Table>>,
    /// The store's change sequence read up to; `None` until the first full read.
    cursor: Option<i64>,
    allow_generation: u64,
}

/// What one read found: each address's listing end (or none), and the new cursor.
type Read = (Vec<(IpAddr, Option<i64>)>, i64);

impl Feed {
    pub(super) fn new(
        config: Arc<BgpConfig>,
        stats: Arc<BgpStats>,
        rules: Arc<Rules>,
        store: Arc<ReadPool>,
        table: Arc<Mutex<Table>>,
    ) -> Feed {
        let allow_generation = rules.allow_generation();
        Feed {
            config,
            stats,
            rules,
            store,
            table,
            cursor: None,
            allow_generation,
        }
    }

    /// One step: read what changed (everything, the first time) and apply it with the clock.
    /// Blocking: run on the blocking pool.
    pub(super) fn step(&mut self) -> rusqlite::Result<()> {
        let read = match self.cursor {
            None => self.read_all()?,
            Some(after) => self.read_changes(after)?,
        };
        let now = now_ms();
        let mut no_next_hop = 0u64;
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        for (ip, until) in read.0 {
            if !self.config.announceable(ip) {
                no_next_hop += u64::from(until.is_some());
                continue;
            }
            table.set(ip, until);
        }
        self.cursor = Some(read.1);
        let generation = self.rules.allow_generation();
        if generation != self.allow_generation {
            self.allow_generation = generation;
            for ip in table.listed_addresses() {
                if self.rules.excluded(ip) {
                    table.set(ip, None);
                }
            }
        }
        table.expire(now);
        let s = &self.stats;
        s.listed.store(table.listed() as u64, Ordering::Relaxed);
        s.announced
            .store(table.announced_len() as u64, Ordering::Relaxed);
        s.over_limit
            .store(table.held_back() as u64, Ordering::Relaxed);
        if no_next_hop > 0 {
            s.no_next_hop.fetch_add(no_next_hop, Ordering::Relaxed);
        }
        Ok(())
    }

    fn entry(&self, row: &ActorRow, now: i64) -> Option<(IpAddr, Option<i64>)> {
        let ip = row.key.parse::<IpAddr>().ok()?.to_canonical();
        Some((ip, row.listed_until(Kind::Ip, &self.rules, now)))
    }

    /// Every listed address, and the cursor it is complete up to (read first, so a change made
    /// during the read is read again next time).
    fn read_all(&self) -> rusqlite::Result<Read> {
        let upto = self.store.with(current_seq)? as i64;
        let now = now_ms();
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .store
                .with(|c| page_by_key(c, Kind::Ip, &after, PAGE))?;
            out.extend(
                page.iter()
                    .filter_map(|r| self.entry(r, now))
                    .filter(|(_, until)| until.is_some()),
            );
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after = last.key.clone(),
                _ => break,
            }
        }
        Ok((out, upto))
    }

    /// What changed after `after`, up to the newest change.
    fn read_changes(&self, after: i64) -> rusqlite::Result<Read> {
        let upto = self.store.with(current_seq)? as i64;
        let now = now_ms();
        let mut out = Vec::new();
        let mut from = after;
        while from < upto {
            let page = self
                .store
                .with(|c| page_by_change(c, Kind::Ip, from, upto, PAGE))?;
            out.extend(page.iter().filter_map(|r| self.entry(r, now)));
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => from = last.change_seq,
                _ => break,
            }
        }
        Ok((out, upto.max(after)))
    }
}
