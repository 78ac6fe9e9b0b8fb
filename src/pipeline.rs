//! Fans each event out to one bounded queue per output. `publish` never waits: a full queue
//! drops the event for that output only and counts it, so a slow output cannot blind capture.
//! An output's queue closes when the last `Pipeline` clone is dropped, and the output drains.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::event::Event;

/// A queue of N events may hold N times this many bytes: about a third of a queue of typical
/// probes (800 B to 1 KiB each in memory), while a flood of 64 KiB messages fills it after a
/// few hundred. Every queue together stays within the node's memory target (under 100 MB in
/// all).
const BUDGET_BYTES_PER_EVENT: u64 = 320;
/// What an allocation costs beyond the bytes asked for: glibc's chunk header and rounding.
const ALLOCATION_OVERHEAD_BYTES: usize = 24;
/// The allocations of every event: the event (in its `Arc`) and its five strings.
const EVENT_ALLOCATIONS: usize = 6;
/// What a set of credentials costs beyond its own strings' lengths (rare: REGISTERs).
const SIP_AUTH_BYTES: usize = 512;

/// The bytes an event holds in memory, which its queue is charged: the event itself, every
/// string it owns, the signed form of a peer's event, and the allocator's share (a queue
/// charged for the message alone held a third more than its budget).
fn weight(e: &Event) -> u64 {
    let strings = e.timestamp.len()
        + e.called_number.len()
        + e.method.len()
        + e.user_agent.len()
        + e.message.len();
    let auth = e.sip_auth.as_ref().map_or(0, |a| {
        let digest = a.digest.as_ref();
        SIP_AUTH_BYTES
            + a.username.len()
            + digest.map_or(0, |d| d.realm.len() + d.uri.len() + d.response.len())
    });
    let signed = e
        .signed
        .as_ref()
        .map_or(0, |s| s.len() + ALLOCATION_OVERHEAD_BYTES);
    (std::mem::size_of::<Event>()
        + 2 * std::mem::size_of::<usize>()
        + EVENT_ALLOCATIONS * ALLOCATION_OVERHEAD_BYTES
        + strings
        + auth
        + signed) as u64
}

/// What every output reports about its queue and its work.
#[derive(Debug)]
pub struct OutputStats {
    pub name: &'static str,
    pub capacity: usize,
    /// The most bytes of events the queue may hold.
    pub capacity_bytes: u64,
    queued_bytes: AtomicU64,
    enqueued: AtomicU64,
    dequeued: AtomicU64,
    /// Events dropped because the queue was full (or the output had stopped).
    pub dropped: AtomicU64,
    /// Events the output wrote successfully.
    pub written: AtomicU64,
    /// Events the output failed to write.
    pub failed: AtomicU64,
}

impl OutputStats {
    fn new(name: &'static str, capacity: usize) -> Self {
        Self {
            name,
            capacity,
            capacity_bytes: capacity as u64 * BUDGET_BYTES_PER_EVENT,
            queued_bytes: AtomicU64::new(0),
            enqueued: AtomicU64::new(0),
            dequeued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Bytes of events waiting in the queue now.
    pub fn depth_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Events waiting in the queue now.
    pub fn depth(&self) -> u64 {
        let taken = self.dequeued.load(Ordering::Relaxed);
        self.enqueued.load(Ordering::Relaxed).saturating_sub(taken)
    }

    pub fn wrote(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn failed(&self, n: usize) {
        self.failed.fetch_add(n as u64, Ordering::Relaxed);
    }
}

struct Tap {
    tx: mpsc::Sender<Arc<Event>>,
    stats: Arc<OutputStats>,
    /// Only events this node captured: peers' reports are claims, not facts to act on.
    local_only: bool,
}

/// The fan-out. Cheap to clone; every capture task holds one.
#[derive(Clone, Default)]
pub struct Pipeline {
    taps: Arc<Vec<Tap>>,
}

/// Builds a pipeline output by output.
#[derive(Default)]
pub struct PipelineBuilder {
    taps: Vec<Tap>,
    stats: Vec<Arc<OutputStats>>,
}

impl PipelineBuilder {
    /// Adds an output with a queue of `capacity` events and returns its receiving end.
    pub fn output(&mut self, name: &'static str, capacity: usize) -> OutputQueue {
        self.output_of(name, capacity, false)
    }

    /// Adds an output that is handed only events this node captured itself (`local_only`), or
    /// every event.
    pub fn output_of(
        &mut self,
        name: &'static str,
        capacity: usize,
        local_only: bool,
    ) -> OutputQueue {
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(OutputStats::new(name, capacity));
        self.stats.push(stats.clone());
        self.taps.push(Tap {
            tx,
            stats: stats.clone(),
            local_only,
        });
        OutputQueue { rx, stats }
    }

    pub fn build(self) -> (Pipeline, Vec<Arc<OutputStats>>) {
        (
            Pipeline {
                taps: Arc::new(self.taps),
            },
            self.stats,
        )
    }
}

impl Pipeline {
    /// Hands the event to every output without waiting.
    pub fn publish(&self, event: Event) {
        let size = weight(&event);
        let local = event.origin == crate::event::Origin::Local;
        let event = Arc::new(event);
        for tap in self.taps.iter() {
            if tap.local_only && !local {
                continue;
            }
            // Bounded in bytes as well as in events: a flood of 64 KiB messages must not fill
            // memory where a flood of small probes would not.
            // Reserve the bytes before the event is visible to the output, so the output's
            // subtraction can never run ahead of this addition (and wrap the counter).
            // An empty queue takes any one event, so no event is too big for every queue.
            let queued = tap.stats.queued_bytes.fetch_add(size, Ordering::Relaxed);
            if queued > 0 && queued + size > tap.stats.capacity_bytes {
                tap.stats.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                tap.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // Counted before the send for the same reason; `depth` saturates meanwhile.
            tap.stats.enqueued.fetch_add(1, Ordering::Relaxed);
            if tap.tx.try_send(event.clone()).is_err() {
                tap.stats.enqueued.fetch_sub(1, Ordering::Relaxed);
                tap.stats.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                tap.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The receiving end of one output's queue.
pub struct OutputQueue {
    rx: mpsc::Receiver<Arc<Event>>,
    pub stats: Arc<OutputStats>,
}

impl OutputQueue {
    /// Waits for at least one event and takes up to `limit`; 0 means the queue is closed and empty.
    pub async fn recv_many(&mut self, buf: &mut Vec<Arc<Event>>, limit: usize) -> usize {
        let n = self.rx.recv_many(buf, limit).await;
        self.taken(buf, n);
        n
    }

    fn taken(&self, buf: &[Arc<Event>], n: usize) {
        self.counted(n);
        self.release(&buf[buf.len().saturating_sub(n)..]);
    }

    fn counted(&self, n: usize) {
        self.stats.dequeued.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Gives back the byte budget of events taken with a `blocking_recv_many*` call, once they
    /// are written: until then the batch in hand counts against the queue's bytes, so the queue
    /// cannot fill up again behind a batch still held in memory.
    pub fn release(&self, batch: &[Arc<Event>]) {
        let bytes: u64 = batch.iter().map(|e| weight(e)).sum();
        self.stats.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// `blocking_recv_many`, waiting at most `wait`: `None` when nothing came in time. For
    /// thread outputs with upkeep to do while idle; `runtime` drives the timer.
    pub fn blocking_recv_many_for(
        &mut self,
        runtime: &tokio::runtime::Handle,
        buf: &mut Vec<Arc<Event>>,
        limit: usize,
        wait: std::time::Duration,
    ) -> Option<usize> {
        let rx = &mut self.rx;
        let n = runtime
            .block_on(async { tokio::time::timeout(wait, rx.recv_many(buf, limit)).await })
            .ok()?;
        self.counted(n);
        Some(n)
    }

    /// The blocking twin of `recv_many`, for outputs that own a thread: the events' bytes stay
    /// counted until [`OutputQueue::release`].
    pub fn blocking_recv_many(&mut self, buf: &mut Vec<Arc<Event>>, limit: usize) -> usize {
        let Some(first) = self.rx.blocking_recv() else {
            return 0;
        };
        buf.push(first);
        let mut n = 1;
        while n < limit {
            match self.rx.try_recv() {
                Ok(e) => {
                    buf.push(e);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        self.counted(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_for_that_output_only_and_counts() {
        let mut b = PipelineBuilder::default();
        let mut small = b.output("small", 1);
        let mut big = b.output("big", 100);
        let (p, _) = b.build();
        for _ in 0..3 {
            p.publish(crate::event::tests::sample());
        }
        assert_eq!(small.stats.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(big.stats.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(big.stats.depth(), 3);
        drop(p);
        let mut buf = Vec::new();
        assert_eq!(big.recv_many(&mut buf, 100).await, 3);
        assert_eq!(big.recv_many(&mut buf, 100).await, 0);
        assert_eq!(small.recv_many(&mut buf, 100).await, 1);
        assert_eq!(big.stats.depth(), 0);
        assert_eq!(big.stats.depth_bytes(), 0);
    }

    #[test]
    fn a_local_only_output_never_sees_a_peers_event() {
        let mut b = PipelineBuilder::default();
        let local = b.output_of("syslog", 10, true);
        let all = b.output("sqlite", 10);
        let (p, _) = b.build();
        p.publish(crate::event::tests::sample());
        let mut from_peer = crate::event::tests::sample();
        from_peer.origin = crate::event::Origin::Peer("12D3Koo".into());
        p.publish(from_peer);
        assert_eq!(local.stats.depth(), 1);
        assert_eq!(local.stats.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(all.stats.depth(), 2);
    }

    #[test]
    fn a_queue_is_bounded_in_bytes_too() {
        let mut b = PipelineBuilder::default();
        let q = b.output("q", 480);
        let (p, _) = b.build();
        let mut e = crate::event::tests::sample();
        e.message = "x".repeat(60 * 1024);
        for _ in 0..10 {
            p.publish(e.clone());
        }
        // 480 * 320 bytes hold two 60 KiB messages, not ten.
        assert_eq!(q.stats.depth(), 2);
        assert_eq!(q.stats.dropped.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn an_event_is_charged_all_it_holds_and_an_empty_queue_takes_any_one() {
        let mut e = crate::event::tests::sample();
        e.message = "x".repeat(1000);
        e.user_agent = "y".repeat(100);
        let held = std::mem::size_of::<Event>() + 1000 + 100 + e.timestamp.len();
        assert!(weight(&e) > held as u64, "{} <= {held}", weight(&e));
        e.signed = Some(vec![0u8; 2000].into());
        assert!(weight(&e) > held as u64 + 2000);
        // Four events' budget is 1,280 bytes: the first 4 KiB message is taken all the same,
        // the second is not.
        let mut b = PipelineBuilder::default();
        let q = b.output("q", 4);
        let (p, _) = b.build();
        e.message = "x".repeat(4096);
        p.publish(e.clone());
        p.publish(e);
        assert_eq!(q.stats.depth(), 1);
        assert_eq!(q.stats.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_batch_in_hand_holds_its_bytes_until_released() {
        let mut b = PipelineBuilder::default();
        let mut q = b.output("q", 480);
        let (p, _) = b.build();
        let mut e = crate::event::tests::sample();
        e.message = "x".repeat(60 * 1024);
        p.publish(e.clone());
        p.publish(e.clone());
        let mut batch = Vec::new();
        assert_eq!(q.blocking_recv_many(&mut batch, 10), 2);
        assert_eq!(q.stats.depth(), 0);
        // Taken but not yet written: the queue has no room for another 60 KiB.
        p.publish(e.clone());
        assert_eq!(q.stats.dropped.load(Ordering::Relaxed), 1);
        q.release(&batch);
        assert_eq!(q.stats.depth_bytes(), 0);
        p.publish(e);
        assert_eq!(q.stats.depth(), 1);
    }
}
