//! Sockets → events. Each transport's `serve` takes an already-bound socket (so tests bind port
//! 0), turns what it reads into events with the pure `inspect`, publishes them without waiting,
//! and in responsive mode answers. Intake stops when the cancellation token fires.

pub mod inspect;
pub mod ratelimit;
pub mod stream;
pub mod tls;
pub mod trap;
pub mod udp;

use std::sync::Arc;

use uuid::Uuid;

use crate::metrics::Counters;
use crate::pipeline::Pipeline;

/// One address to listen on. Default IPv6 addresses are `optional`: a host without IPv6 skips them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub addr: std::net::SocketAddr,
    pub optional: bool,
}

/// How long a call a registered source places lasts before we hang up: long enough for a
/// toll-fraud tool to count it as connected and move on to the next number, short enough that
/// few are open at once.
pub const CALL_LENGTH: std::time::Duration = std::time::Duration::from_secs(3);

/// What every capture task shares.
pub struct CaptureContext {
    pub pipeline: Pipeline,
    pub counters: Arc<Counters>,
    pub inspect: inspect::InspectContext,
    pub reply_limit: ratelimit::ReplyLimiter,
    pub stream_limits: stream::StreamLimits,
}

impl CaptureContext {
    pub fn new(
        pipeline: Pipeline,
        counters: Arc<Counters>,
        node_id: Uuid,
        responsive: bool,
        server_header: String,
        trap: trap::TrapConfig,
    ) -> Self {
        Self {
            pipeline,
            counters,
            inspect: inspect::InspectContext {
                node_id,
                responsive,
                server_header,
                trap: Arc::new(trap::Trap::new(trap)),
            },
            reply_limit: ratelimit::ReplyLimiter::default(),
            stream_limits: stream::StreamLimits::default(),
        }
    }

    /// Inspects one message and publishes its event; returns the replies to send, and a BYE
    /// to send [`CALL_LENGTH`] later when the replies answered a call.
    pub(crate) fn handle(
        &self,
        bytes: &[u8],
        meta: &inspect::Meta,
    ) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
        Counters::inc(&self.counters.messages_received);
        match inspect::inspect(bytes, meta, &self.inspect) {
            Ok(inspected) => {
                Counters::inc(&self.counters.events_accepted);
                if inspected.malformed {
                    Counters::inc(&self.counters.events_malformed);
                }
                self.pipeline.publish(inspected.event);
                (inspected.replies, inspected.hangup)
            }
            Err(rejected) => {
                let counter = match rejected {
                    crate::sip::Rejected::Response => &self.counters.rejected_responses,
                    crate::sip::Rejected::NotSip => &self.counters.rejected_not_sip,
                    crate::sip::Rejected::Malformed => &self.counters.rejected_malformed,
                };
                Counters::inc(counter);
                tracing::debug!(source = %meta.source, transport = %meta.transport, len = bytes.len(), reason = ?rejected, "Rejected a message.");
                (Vec::new(), None)
            }
        }
    }
}
