//! The one writer: inserts a batch of events and updates the summaries in one transaction.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;
use std::sync::atomic::Ordering;

use crate::event::Event;
use crate::metrics::WebhookStats;

/// Owns the read-write connection. Not `Sync`: it lives on the sqlite output's thread.
#[derive(Debug)]
pub struct Writer {
    conn: Connection,
    outbox: Option<OutboxWriter>,
    /// Declared last: dropped after the connection, it runs the final checkpoint.
    _checkpointer: super::checkpoint::Checkpointer,
}

/// Queues every written event for the WebHook in the same transaction (see `store::outbox`).
#[derive(Debug)]
pub struct OutboxWriter {
    /// Rows the outbox may hold; beyond it the oldest are dead-lettered as "outbox full".
    pub cap: u64,
    /// Wakes the deliverer after each commit; dropping it (the writer's thread ends) tells the
    /// deliverer that no more rows will come.
    pub wake: tokio::sync::mpsc::Sender<()>,
    pub stats: Arc<WebhookStats>,
}

const INSERT_HONEY: &str =
    "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip,
  called_number, transport_type, method, user_agent, sip_message, created_by_node_id,
  received_from_peer)
  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const UPSERT_IP: &str =
    "INSERT INTO sentrypeer_ip_addresses (ip_address, seen_last, seen_count) VALUES (?1, ?2, ?3)
  ON CONFLICT(ip_address) DO UPDATE SET seen_last = max(seen_last, excluded.seen_last),
  seen_count = seen_count + excluded.seen_count";
const UPSERT_NUMBER: &str =
    "INSERT INTO sentrypeer_numbers (called_number, seen_last, seen_count) VALUES (?1, ?2, ?3)
  ON CONFLICT(called_number) DO UPDATE SET seen_last = max(seen_last, excluded.seen_last),
  seen_count = seen_count + excluded.seen_count";

impl Writer {
    pub(super) fn new(conn: Connection, path: &std::path::Path) -> Result<Self, super::StoreError> {
        conn.set_prepared_statement_cache_capacity(16);
        let checkpointer =
            super::checkpoint::Checkpointer::spawn(path).map_err(super::StoreError::Thread)?;
        Ok(Self {
            conn,
            outbox: None,
            _checkpointer: checkpointer,
        })
    }

    /// From now on, also queue every event for the WebHook.
    pub fn queue_for_webhook(&mut self, outbox: OutboxWriter) {
        self.outbox = Some(outbox);
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
                    match &e.origin {
                        crate::event::Origin::Local => None,
                        crate::event::Origin::Peer(p) => Some(p.as_str()),
                    },
                ])?;
                bump(ips.entry(ip).or_insert((&e.timestamp, 0)), &e.timestamp);
                bump(
                    numbers.entry(&e.called_number).or_insert((&e.timestamp, 0)),
                    &e.timestamp,
                );
            }
            let honey_id = tx.last_insert_rowid();
            if self.outbox.is_some() {
                for e in events {
                    let body = serde_json::to_string(&e.to_json())
                        .map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))?;
                    super::outbox::insert(&tx, &e.uuid.hyphenated().to_string(), &body)?;
                }
            }
            let mut upsert = tx.prepare_cached(UPSERT_IP)?;
            for (ip, (last, count)) in &ips {
                upsert.execute(rusqlite::params![ip, last, count])?;
            }
            let mut upsert = tx.prepare_cached(UPSERT_NUMBER)?;
            for (number, (last, count)) in &numbers {
                upsert.execute(rusqlite::params![number, last, count])?;
            }
            super::set_watermark(&tx, honey_id)?;
        }
        let Some(outbox) = &self.outbox else {
            return tx.commit();
        };
        // Count the table only when the gauge says the cap may be near.
        let queued = events.len() as u64;
        let near = outbox.stats.outbox_depth.load(Ordering::Relaxed) + queued > outbox.cap;
        let overflow = if near {
            super::outbox::enforce_cap(&tx, outbox.cap)?
        } else {
            0
        };
        let depth = near.then(|| super::outbox::depth(&tx)).transpose()?;
        tx.commit()?;
        let stats = &outbox.stats;
        match depth {
            Some(d) => stats.outbox_depth.store(d, Ordering::Relaxed),
            None => {
                stats.outbox_depth.fetch_add(queued, Ordering::Relaxed);
            }
        }
        if overflow > 0 {
            let before = stats
                .dead_lettered_outbox_full
                .fetch_add(overflow, Ordering::Relaxed);
            // Once, then every 10,000 events: a flood must not flood the log too.
            if before == 0 || before / 10_000 != (before + overflow) / 10_000 {
                tracing::warn!(
                    total = before + overflow,
                    cap = outbox.cap,
                    "WebHook outbox full: dead-lettered the oldest events."
                );
            }
        }
        let _ = outbox.wake.try_send(());
        Ok(())
    }
}

fn bump<'a>(slot: &mut (&'a str, i64), ts: &'a str) {
    if ts > slot.0 {
        slot.0 = ts;
    }
    slot.1 += 1;
}
