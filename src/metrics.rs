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
    /// Of those, requests recorded although they break SIP's rules (missing or contradictory
    /// headers); they are never answered.
    pub events_malformed: AtomicU64,
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
    /// API connections refused by the per-source or total limit.
    pub api_connections_refused: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshakes_failed: AtomicU64,
    /// Streams closed for an oversized or unframeable message.
    pub streams_rejected: AtomicU64,
    /// Events received from peers and accepted.
    pub peer_events_accepted: AtomicU64,
    /// Events received from peers and rejected by validation.
    pub peer_events_rejected: AtomicU64,
    /// DNSBL: messages received over UDP and TCP.
    pub dnsbl_queries: AtomicU64,
    /// DNSBL: listed names answered with data (A, TXT).
    pub dnsbl_listed: AtomicU64,
    /// DNSBL: NXDOMAIN answers (not listed, no such name).
    pub dnsbl_nxdomain: AtomicU64,
    /// DNSBL: REFUSED and NOTIMP answers (outside the zone, another class or opcode).
    pub dnsbl_refused: AtomicU64,
    /// DNSBL: messages that are not well-formed queries (FORMERR, or no answer at all).
    pub dnsbl_malformed: AtomicU64,
    /// DNSBL: SERVFAIL answers (the database failed).
    pub dnsbl_failed: AtomicU64,
    /// DNSBL: TCP connections refused by the per-source or total limit.
    pub dnsbl_connections_refused: AtomicU64,
    /// Peer connections refused by a connection limit (in total, per peer, per address, or
    /// handshakes under way).
    pub peer_connections_refused: AtomicU64,
    /// Identities met while the shared grace budget was spent: they start as listeners.
    pub peer_grace_refused: AtomicU64,
    /// Peers' catch-up and peer-exchange requests refused: listeners, a spent budget, or too
    /// many pages being read at once.
    pub peer_requests_refused: AtomicU64,
    /// Events sent to peers in catch-up pages.
    pub peer_catch_up_events_served: AtomicU64,
    /// Catch-up sessions with a peer not begun or ended early because its budget, or the one
    /// shared by peers without standing, was spent.
    pub peer_catch_up_limited: AtomicU64,
    /// OpenDHT: values handed to us under `bad_actors`.
    pub opendht_values_received: AtomicU64,
    /// OpenDHT: values dropped because the intake was behind (its queue was full).
    pub opendht_values_dropped: AtomicU64,
    /// OpenDHT: values imported as events.
    pub opendht_events_accepted: AtomicU64,
    /// OpenDHT: values refused by validation (too large, malformed, private source, too old…).
    pub opendht_values_rejected: AtomicU64,
    /// OpenDHT: values over the per-sender or total budget.
    pub opendht_values_rate_limited: AtomicU64,
    /// OpenDHT: values already held (or our own, come back).
    pub opendht_values_duplicate: AtomicU64,
    /// OpenDHT: events put.
    pub opendht_puts: AtomicU64,
    /// OpenDHT: puts the DHT confirmed stored.
    pub opendht_puts_stored: AtomicU64,
    /// OpenDHT: puts that failed (no node took the value).
    pub opendht_puts_failed: AtomicU64,
    /// OpenDHT: events not put because of the outbound budget.
    pub opendht_puts_limited: AtomicU64,
}

impl Counters {
    /// Adds one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter with its name, for the API and Prometheus.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("messages_received", get(&self.messages_received)),
            ("events_accepted", get(&self.events_accepted)),
            ("events_malformed", get(&self.events_malformed)),
            ("rejected_responses", get(&self.rejected_responses)),
            ("rejected_not_sip", get(&self.rejected_not_sip)),
            ("rejected_malformed", get(&self.rejected_malformed)),
            ("replies_sent", get(&self.replies_sent)),
            ("replies_rate_limited", get(&self.replies_rate_limited)),
            ("connections_accepted", get(&self.connections_accepted)),
            ("connections_refused", get(&self.connections_refused)),
            (
                "api_connections_refused",
                get(&self.api_connections_refused),
            ),
            ("tls_handshakes_failed", get(&self.tls_handshakes_failed)),
            ("streams_rejected", get(&self.streams_rejected)),
            ("peer_events_accepted", get(&self.peer_events_accepted)),
            ("peer_events_rejected", get(&self.peer_events_rejected)),
            ("dnsbl_queries", get(&self.dnsbl_queries)),
            ("dnsbl_listed", get(&self.dnsbl_listed)),
            ("dnsbl_nxdomain", get(&self.dnsbl_nxdomain)),
            ("dnsbl_refused", get(&self.dnsbl_refused)),
            ("dnsbl_malformed", get(&self.dnsbl_malformed)),
            ("dnsbl_failed", get(&self.dnsbl_failed)),
            (
                "dnsbl_connections_refused",
                get(&self.dnsbl_connections_refused),
            ),
            (
                "peer_connections_refused",
                get(&self.peer_connections_refused),
            ),
            ("peer_grace_refused", get(&self.peer_grace_refused)),
            ("peer_requests_refused", get(&self.peer_requests_refused)),
            (
                "peer_catch_up_events_served",
                get(&self.peer_catch_up_events_served),
            ),
            ("peer_catch_up_limited", get(&self.peer_catch_up_limited)),
            (
                "opendht_values_received",
                get(&self.opendht_values_received),
            ),
            ("opendht_values_dropped", get(&self.opendht_values_dropped)),
            (
                "opendht_events_accepted",
                get(&self.opendht_events_accepted),
            ),
            (
                "opendht_values_rejected",
                get(&self.opendht_values_rejected),
            ),
            (
                "opendht_values_rate_limited",
                get(&self.opendht_values_rate_limited),
            ),
            (
                "opendht_values_duplicate",
                get(&self.opendht_values_duplicate),
            ),
            ("opendht_puts", get(&self.opendht_puts)),
            ("opendht_puts_stored", get(&self.opendht_puts_stored)),
            ("opendht_puts_failed", get(&self.opendht_puts_failed)),
            ("opendht_puts_limited", get(&self.opendht_puts_limited)),
        ]
    }
}

/// What the WebHook deliverer reports. The outbox depth is a gauge the writer raises and the
/// deliverer lowers, recounted from the table now and then (a `webhook replay` run by another
/// process also changes it).
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// The most events the outbox holds before the oldest are dead-lettered.
    pub outbox_cap: u64,
    /// Events the endpoint acknowledged with a 2xx.
    pub delivered: AtomicU64,
    /// Event deliveries that failed and were scheduled again (one per event per attempt).
    pub retried: AtomicU64,
    /// Events the endpoint refused for good (a 4xx other than 401, 403, 408 and 429).
    pub dead_lettered: AtomicU64,
    /// Events pushed out of a full outbox, oldest first.
    pub dead_lettered_outbox_full: AtomicU64,
    /// The oldest dead letters deleted to keep the table under its cap.
    pub dead_letters_pruned: AtomicU64,
    /// Events waiting in the outbox.
    pub outbox_depth: AtomicU64,
    /// Of those, events whose last attempt failed (recounted every few seconds).
    pub retrying: AtomicU64,
    /// Requests in flight now.
    pub in_flight: AtomicU64,
    /// Failed attempts since the last success: 0 when the endpoint is healthy.
    pub consecutive_failures: AtomicU64,
    /// OAuth 2 tokens fetched.
    pub token_fetches: AtomicU64,
    /// The last delivery error, without secrets.
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl WebhookStats {
    pub fn new(outbox_cap: u64) -> Self {
        Self {
            outbox_cap,
            ..Self::default()
        }
    }

    pub fn set_last_error(&self, e: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|l| l.clone())
    }

    /// Every number with its name, for the API and Prometheus.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("delivered", get(&self.delivered)),
            ("retried", get(&self.retried)),
            ("dead_lettered", get(&self.dead_lettered)),
            (
                "dead_lettered_outbox_full",
                get(&self.dead_lettered_outbox_full),
            ),
            ("dead_letters_pruned", get(&self.dead_letters_pruned)),
            ("outbox_depth", get(&self.outbox_depth)),
            ("retrying", get(&self.retrying)),
            ("outbox_cap", self.outbox_cap),
            ("in_flight", get(&self.in_flight)),
            ("consecutive_failures", get(&self.consecutive_failures)),
            ("token_fetches", get(&self.token_fetches)),
        ]
    }
}

/// What a kernel-set output (`--nftables`, `--ipset`) reports: what it put in the kernel and
/// took out, how its batches went, and when the sets were last reconciled with the store.
#[derive(Debug)]
pub struct KernelSetStats {
    /// The output's name: `nftables` or `ipset`.
    pub name: &'static str,
    /// Elements added (or given a new timeout) in the kernel.
    pub added: AtomicU64,
    /// Elements deleted from the kernel before their timeout.
    pub removed: AtomicU64,
    /// Batches applied (one `nft -f` transaction or `ipset restore` run each).
    pub batches: AtomicU64,
    /// Batches the tool refused; the next reconcile rewrites the sets whole.
    pub failures: AtomicU64,
    /// Elements the sets hold by the node's account (the kernel also expires them on its own).
    pub elements: AtomicU64,
    /// Full reconciles with the store, done.
    pub reconciles: AtomicU64,
    /// When the last full reconcile finished (ms since the epoch; 0: none yet).
    pub last_reconcile_ms: AtomicU64,
    /// How long it took, reading the store and loading the kernel (ms).
    pub last_reconcile_duration_ms: AtomicU64,
    /// The longest time from a probe's capture to its address being in the kernel (ms).
    pub max_delay_ms: AtomicU64,
    /// The last batch's time from the oldest capture it held to the kernel (ms).
    pub last_delay_ms: AtomicU64,
}

impl KernelSetStats {
    pub fn new(name: &'static str) -> Self {
        let zero = || AtomicU64::new(0);
        Self {
            name,
            added: zero(),
            removed: zero(),
            batches: zero(),
            failures: zero(),
            elements: zero(),
            reconciles: zero(),
            last_reconcile_ms: zero(),
            last_reconcile_duration_ms: zero(),
            max_delay_ms: zero(),
            last_delay_ms: zero(),
        }
    }

    /// Every number with its name, for the API and Prometheus.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("added", get(&self.added)),
            ("removed", get(&self.removed)),
            ("batches", get(&self.batches)),
            ("failures", get(&self.failures)),
            ("elements", get(&self.elements)),
            ("reconciles", get(&self.reconciles)),
            ("last_reconcile_ms", get(&self.last_reconcile_ms)),
            (
                "last_reconcile_duration_ms",
                get(&self.last_reconcile_duration_ms),
            ),
            ("max_delay_ms", get(&self.max_delay_ms)),
            ("last_delay_ms", get(&self.last_delay_ms)),
        ]
    }
}
