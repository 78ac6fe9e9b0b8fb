//! The one writer: inserts a batch of events and updates the summaries in one transaction.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;

use crate::event::Event;

/// Owns the read-write connection. Not `Sync`: it lives on the sqlite output's thread.
#[derive(Debug)]
pub struct Writer {
    conn: Connection,
}

const INSERT_HONEY: &str = "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip,
  called_number, transport_type, method, user_agent, sip_message, created_by_node_id)
  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const UPSERT_IP: &str = "INSERT INTO sentrypeer_ip_addresses (ip_address, seen_last, seen_count) VALUES (?1, ?2, ?3)
  ON CONFLICT(ip_address) DO UPDATE SET seen_last = max(seen_last, excluded.seen_last),
  seen_count = seen_count + excluded.seen_count";
const UPSERT_NUMBER: &str = "INSERT INTO sentrypeer_numbers (called_number, seen_last, seen_count) VALUES (?1, ?2, ?3)
  ON CONFLICT(called_number) DO UPDATE SET seen_last = max(seen_last, excluded.seen_last),
  seen_count = seen_count + excluded.seen_count";

impl Writer {
    pub(super) fn new(conn: Connection) -> rusqlite::Result<Self> {
        conn.set_prepared_statement_cache_capacity(16);
        Ok(Self { conn })
    }

    /// Writes every event of the batch, or none of them.
    pub fn write_batch(&mut self, events: &[Arc<Event>]) -> rusqlite::Result<()> {
        // The summaries change once per distinct address and number, not once per event.
        let mut ips: HashMap<String, (&str, i64)> = HashMap::new();
        let mut numbers: HashMap<&str, (&str, i64)> = HashMap::new();
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT_HONEY)?;
            for e in events {
                let ip = e.source_ip();
                insert.execute(rusqlite::params![
                    e.timestamp,
                    e.uuid.hyphenated().to_string(),
                    e.collected_method.as_str(),
                    ip,
                    e.called_number,
                    e.transport.as_str(),
                    e.method,
                    e.user_agent,
                    e.message,
                    e.node_id.hyphenated().to_string(),
                ])?;
                bump(ips.entry(ip).or_insert((&e.timestamp, 0)), &e.timestamp);
                bump(numbers.entry(&e.called_number).or_insert((&e.timestamp, 0)), &e.timestamp);
            }
            let mut upsert = tx.prepare_cached(UPSERT_IP)?;
            for (ip, (last, count)) in &ips {
                upsert.execute(rusqlite::params![ip, last, count])?;
            }
            let mut upsert = tx.prepare_cached(UPSERT_NUMBER)?;
            for (number, (last, count)) in &numbers {
                upsert.execute(rusqlite::params![number, last, count])?;
            }
            super::set_watermark(&tx, tx.last_insert_rowid())?;
        }
        tx.commit()
    }

    /// Whether an event with this UUID is already stored (peers' events are de-duplicated by it).
    pub fn has_event(&self, uuid: &uuid::Uuid) -> rusqlite::Result<bool> {
        let mut stmt = self.conn.prepare_cached("SELECT 1 FROM honey WHERE event_uuid = ?1 LIMIT 1")?;
        stmt.exists([uuid.hyphenated().to_string()])
    }

    /// The connection, for outputs that keep their own tables in the same database.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

fn bump<'a>(slot: &mut (&'a str, i64), ts: &'a str) {
    if ts > slot.0 {
        slot.0 = ts;
    }
    slot.1 += 1;
}
