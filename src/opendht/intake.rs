//! The listen half: an intake that takes upstream nodes' values under `bad_actors` and
//! publishes the valid new ones into the pipeline as reports from [`ORIGIN`].
//!
//! OpenDHT calls back on its own thread: the callback copies a value (refusing one over
//! [`MAX_VALUE_BYTES`] unread) and only tries to send it on a bounded channel; when the channel
//! is full the value is dropped and counted. The task reading the channel applies, in order:
//! the total budget (events and bytes, whatever they hold), validation as a libp2p peer's event
//! (bounded fields, a public source, within 7 days, a plausible number; no signature to check),
//! our own values (our node id) set aside, the per-sender budget (by claimed node id), and
//! de-duplication by `event_uuid` (recent UUIDs, then the database).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::OptionalExtension as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::running::{Dht, Seen};
use super::{ORIGIN, OpenDhtConfig};
use crate::event::{Event, Origin};
use crate::metrics::Counters;
use crate::p2p::standing::{Limiter, RateLimits};
use crate::p2p::validate::{self, Policy};
use crate::pipeline::Pipeline;
use crate::store::ReadPool;

/// The largest value read: what a peer's signed event may be on the libp2p network. Real
/// upstream values are 1-2 KiB.
pub(super) const MAX_VALUE_BYTES: usize = validate::MAX_WIRE_EVENT_BYTES;
/// Values waiting between OpenDHT's thread and the intake task (at most 48 MiB, far less in
/// practice): a joining node is handed every stored value at once.
const VALUE_QUEUE: usize = 1024;
/// Everything OpenDHT may bring, whoever wrote it: node ids cost nothing to make up, so this
/// is what bounds how fast values can grow the database. A busy upstream network carries a
/// few events a second; a join brings the last ten minutes at once.
pub(super) const TOTAL_LIMITS: RateLimits = RateLimits {
    events_per_sec: 50.0,
    events_burst: 5_000.0,
    bytes_per_sec: 256.0 * 1024.0,
    bytes_burst: 16.0 * 1024.0 * 1024.0,
};
/// One claimed node id: one honeypot's share, below the total.
pub(super) const PER_SENDER_LIMITS: RateLimits = RateLimits {
    events_per_sec: 10.0,
    events_burst: 1_000.0,
    bytes_per_sec: 64.0 * 1024.0,
    bytes_burst: 4.0 * 1024.0 * 1024.0,
};
/// Senders whose rate is tracked at most; idle ones are forgotten past this.
const MAX_TRACKED_SENDERS: usize = 10_000;

/// The intake half, started once the pipeline exists.
pub struct OpenDhtIntake {
    dht: Arc<Dht>,
    policy: Policy,
}

/// What the intake needs from the rest of the node.
pub struct IntakeContext {
    /// This node's id: values carrying it are ours, come back.
    pub node_id: Uuid,
    pub pipeline: Pipeline,
    pub counters: Arc<Counters>,
    pub store: Arc<ReadPool>,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
}

impl OpenDhtIntake {
    pub(super) fn new(dht: Arc<Dht>, config: &OpenDhtConfig) -> Self {
        Self {
            dht,
            policy: Policy {
                allow_private: config.allow_private,
            },
        }
    }

    /// Listens on `bad_actors` and spawns the task that imports what arrives, until intake is
    /// cancelled.
    pub fn start(self, cx: IntakeContext) {
        let (tx, rx) = mpsc::channel::<Option<Vec<u8>>>(VALUE_QUEUE);
        let counters = cx.counters.clone();
        let listen = self
            .dht
            .runner
            .listen(&self.dht.key, MAX_VALUE_BYTES, move |value| {
                Counters::inc(&counters.opendht_values_received);
                if tx.try_send(value).is_err() {
                    Counters::inc(&counters.opendht_values_dropped);
                }
            });
        let mut importer = Importer {
            node_id: cx.node_id,
            policy: self.policy,
            pipeline: cx.pipeline,
            counters: cx.counters,
            store: cx.store,
            total: Limiter::new(TOTAL_LIMITS, Instant::now()),
            senders: HashMap::new(),
            seen: self.dht.seen.clone(),
        };
        let dht = self.dht;
        let cancel = cx.cancel;
        cx.tracker.spawn(async move {
            let mut rx = rx;
            loop {
                let value = tokio::select! {
                    v = rx.recv() => v,
                    () = cancel.cancelled() => None,
                };
                let Some(value) = value else {
                    break;
                };
                importer.take(value, Instant::now(), SystemTime::now());
            }
            dht.runner.cancel_listen(&dht.key, listen);
            tracing::debug!("OpenDHT intake stopped.");
        });
    }
}

/// What became of a value.
#[derive(Debug, PartialEq, Eq)]
enum Taken {
    Accepted,
    Rejected,
    Limited,
    Duplicate,
}

struct Importer {
    node_id: Uuid,
    policy: Policy,
    pipeline: Pipeline,
    counters: Arc<Counters>,
    store: Arc<ReadPool>,
    total: Limiter,
    senders: HashMap<Uuid, Limiter>,
    /// Event UUIDs imported here or put by the output (shared with it): a value we put comes
    /// back before the database holds its event.
    seen: Arc<Seen>,
}

impl Importer {
    fn take(&mut self, value: Option<Vec<u8>>, now: Instant, wall: SystemTime) -> Taken {
        let taken = match self.judge(value, now, wall) {
            Ok(event) => {
                self.seen.insert(event.uuid);
                self.pipeline.publish(event);
                Taken::Accepted
            }
            Err(t) => t,
        };
        Counters::inc(match taken {
            Taken::Accepted => &self.counters.opendht_events_accepted,
            Taken::Rejected => &self.counters.opendht_values_rejected,
            Taken::Limited => &self.counters.opendht_values_rate_limited,
            Taken::Duplicate => &self.counters.opendht_values_duplicate,
        });
        taken
    }

    fn judge(
        &mut self,
        value: Option<Vec<u8>>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Event, Taken> {
        let Some(bytes) = value else {
            return Err(Taken::Rejected);
        };
        if !self.total.admit(bytes.len(), now) {
            return Err(Taken::Limited);
        }
        let mut event = validate::decode_unsigned(&bytes, wall, self.policy).map_err(|why| {
            tracing::debug!(reason = %why, "Refused an OpenDHT value.");
            Taken::Rejected
        })?;
        if event.node_id == self.node_id {
            return Err(Taken::Duplicate);
        }
        if self.senders.len() >= MAX_TRACKED_SENDERS && !self.senders.contains_key(&event.node_id) {
            let cutoff = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
            self.senders.retain(|_, l| l.last_used() >= cutoff);
            if self.senders.len() >= MAX_TRACKED_SENDERS {
                return Err(Taken::Limited);
            }
        }
        let admitted = self
            .senders
            .entry(event.node_id)
            .or_insert_with(|| Limiter::new(PER_SENDER_LIMITS, now))
            .admit(bytes.len(), now);
        if !admitted {
            return Err(Taken::Limited);
        }
        if self.seen.contains(&event.uuid) || self.in_database(&event.uuid) {
            self.seen.insert(event.uuid);
            return Err(Taken::Duplicate);
        }
        event.origin = Origin::Peer(ORIGIN.into());
        Ok(event)
    }

    /// Whether the database holds an event of this UUID, whoever wrote it.
    fn in_database(&self, uuid: &Uuid) -> bool {
        let id = uuid.hyphenated().to_string();
        self.store
            .with(|c| {
                c.prepare_cached("SELECT 1 FROM honey WHERE event_uuid = ?1 LIMIT 1")?
                    .query_row([&id], |_| Ok(()))
                    .optional()
            })
            .ok()
            .flatten()
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::format_timestamp;

    fn importer(dir: &tempfile::TempDir) -> (Importer, Arc<Counters>) {
        let path = dir.path().join("t.db");
        let opened = crate::store::open(&path).unwrap();
        drop(opened);
        let counters = Arc::new(Counters::default());
        let (pipeline, _stats) = crate::pipeline::PipelineBuilder::default().build();
        (
            Importer {
                node_id: Uuid::new_v4(),
                policy: Policy::default(),
                pipeline,
                counters: counters.clone(),
                store: Arc::new(ReadPool::new(&path)),
                total: Limiter::new(TOTAL_LIMITS, Instant::now()),
                senders: HashMap::new(),
                seen: Arc::default(),
            },
            counters,
        )
    }

    /// A value as upstream writes it: the bare JSON log object, the sensor's own address in
    /// `destination_ip`, bare addresses.
    fn upstream_value(uuid: Uuid, node: Uuid, source: &str) -> Vec<u8> {
        serde_json::json!({
            "app_name": "sentrypeer",
            "app_version": "v4.0.4",
            "event_timestamp": format_timestamp(SystemTime::now() - Duration::from_secs(30)),
            "event_uuid": uuid.to_string(),
            "created_by_node_id": node.to_string(),
            "collected_method": "responsive",
            "transport_type": "UDP",
            "source_ip": source,
            "destination_ip": "198.51.100.7",
            "called_number": "0044123456789",
            "sip_method": "INVITE",
            "sip_user_agent": "friendly-scanner",
            "sip_message": "INVITE sip:0044123456789@198.51.100.7 SIP/2.0\r\n\r\n",
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_upstream_value_becomes_a_report_from_opendht_with_the_sensor_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let (mut imp, _) = importer(&dir);
        let (uuid, node) = (Uuid::new_v4(), Uuid::new_v4());
        let bytes = upstream_value(uuid, node, "8.8.8.8");
        let e = imp
            .judge(Some(bytes), Instant::now(), SystemTime::now())
            .unwrap();
        assert_eq!(e.origin, Origin::Peer("opendht".into()));
        assert_eq!((e.uuid, e.node_id), (uuid, node));
        assert_eq!(e.source.to_string(), "8.8.8.8:0");
        assert_eq!(e.destination.to_string(), "0.0.0.0:0");
        assert_eq!(e.called_number, "0044123456789");
        assert!(e.signed.is_none());
    }

    #[test]
    fn duplicates_our_own_values_and_invalid_ones_are_not_imported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut imp, counters) = importer(&dir);
        let (uuid, node) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Instant::now();
        let wall = SystemTime::now();
        let v = upstream_value(uuid, node, "8.8.8.8");
        assert_eq!(imp.take(Some(v.clone()), now, wall), Taken::Accepted);
        assert_eq!(imp.take(Some(v), now, wall), Taken::Duplicate);
        let ours = upstream_value(Uuid::new_v4(), imp.node_id, "8.8.8.8");
        assert_eq!(imp.take(Some(ours), now, wall), Taken::Duplicate);
        for bad in [
            upstream_value(Uuid::new_v4(), node, "10.0.0.1"),
            upstream_value(Uuid::new_v4(), node, "127.0.0.1"),
            b"not json".to_vec(),
            b"{\"event_uuid\":\"x\"}".to_vec(),
            vec![b'{'; MAX_VALUE_BYTES + 1],
        ] {
            assert_eq!(imp.take(Some(bad), now, wall), Taken::Rejected);
        }
        assert_eq!(imp.take(None, now, wall), Taken::Rejected);
        let mut old: serde_json::Value =
            serde_json::from_slice(&upstream_value(Uuid::new_v4(), node, "8.8.8.8")).unwrap();
        old["event_timestamp"] = format_timestamp(wall - Duration::from_secs(8 * 24 * 3600)).into();
        assert_eq!(
            imp.take(Some(old.to_string().into_bytes()), now, wall),
            Taken::Rejected
        );
        let mut number = old.clone();
        number["event_timestamp"] = format_timestamp(wall).into();
        number["called_number"] = "<script>".into();
        assert_eq!(
            imp.take(Some(number.to_string().into_bytes()), now, wall),
            Taken::Rejected
        );
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(counters.opendht_events_accepted.load(Relaxed), 1);
        assert_eq!(counters.opendht_values_duplicate.load(Relaxed), 2);
        assert_eq!(counters.opendht_values_rejected.load(Relaxed), 8);
    }

    #[test]
    fn one_sender_and_all_senders_together_are_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let (mut imp, _) = importer(&dir);
        let now = Instant::now();
        let wall = SystemTime::now();
        let node = Uuid::new_v4();
        let burst = PER_SENDER_LIMITS.events_burst as usize;
        let taken: Vec<Taken> = (0..burst + 10)
            .map(|_| {
                imp.take(
                    Some(upstream_value(Uuid::new_v4(), node, "8.8.8.8")),
                    now,
                    wall,
                )
            })
            .collect();
        assert!(taken[..burst].iter().all(|t| *t == Taken::Accepted));
        assert!(taken[burst..].iter().all(|t| *t == Taken::Limited));
        // Fresh node ids each time: the total budget still ends it.
        let total = TOTAL_LIMITS.events_burst as usize;
        let limited = (0..total)
            .map(|_| {
                imp.take(
                    Some(upstream_value(Uuid::new_v4(), Uuid::new_v4(), "8.8.4.4")),
                    now,
                    wall,
                )
            })
            .filter(|t| *t == Taken::Limited)
            .count();
        assert_eq!(limited, burst + 10);
    }
}
