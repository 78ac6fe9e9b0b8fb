//! Counters an operator reads in `/health-check` and `/metrics`: what came in, what was
//! rejected and why, and how each output keeps up. Plain atomics, no labels per source.

use std::sync::atomic::{AtomicU64, Ordering};

/// Intake counters shared by every capture task.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams and stream messages read from the network.
    pub messages_received: AtomicU64,
    /// SIP requests turned into events and handed to the outputs.
    pub events_accepted: AtomicU64,
    /// SIP responses received (not bad-actor events).
    pub rejected_responses: AtomicU64,
    /// Data that is not SIP at all.
    pub rejected_not_sip: AtomicU64,
    /// SIP-looking requests that fail to parse.
    pub rejected_malformed: AtomicU64,
    /// Responses sent in responsive mode.
    pub replies_sent: AtomicU64,
    /// Replies withheld by the per-source UDP reply limit.
    pub replies_rate_limited: AtomicU64,
    /// TCP/TLS connections accepted.
    pub connections_accepted: AtomicU64,
    /// TCP/TLS connections refused by the per-source or total limit.
    pub connections_refused: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshakes_failed: AtomicU64,
    /// Streams closed for an oversized or unframeable message.
    pub streams_rejected: AtomicU64,
    /// Events received from peers and accepted.
    pub peer_events_accepted: AtomicU64,
    /// Events received from peers and rejected by validation.
    pub peer_events_rejected: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter with its name, for the API and Prometheus.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("messages_received", get(&self.messages_received)),
            ("events_accepted", get(&self.events_accepted)),
            ("rejected_responses", get(&self.rejected_responses)),
            ("rejected_not_sip", get(&self.rejected_not_sip)),
            ("rejected_malformed", get(&self.rejected_malformed)),
            ("replies_sent", get(&self.replies_sent)),
            ("replies_rate_limited", get(&self.replies_rate_limited)),
            ("connections_accepted", get(&self.connections_accepted)),
            ("connections_refused", get(&self.connections_refused)),
            ("tls_handshakes_failed", get(&self.tls_handshakes_failed)),
            ("streams_rejected", get(&self.streams_rejected)),
            ("peer_events_accepted", get(&self.peer_events_accepted)),
            ("peer_events_rejected", get(&self.peer_events_rejected)),
        ]
    }
}
