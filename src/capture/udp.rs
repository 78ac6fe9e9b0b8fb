//! SIP over UDP: one datagram is one message (trailing octets ignored, RFC 4475 dblreq).

use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::CaptureContext;
use super::inspect::Meta;
use crate::event::Transport;
use crate::metrics::Counters;

/// The largest UDP payload; a longer datagram cannot arrive. One byte more detects truncation.
const MAX_DATAGRAM_BYTES: usize = 65_507;

pub async fn serve(socket: UdpSocket, cx: Arc<CaptureContext>, cancel: CancellationToken) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + 1];
    loop {
        let (len, source) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier replies surface here on Linux; they concern no one.
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive error.");
                    continue;
                }
            },
        };
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        let meta = Meta {
            transport: Transport::Udp,
            source,
            local,
        };
        let replies = cx.handle(datagram, &meta);
        if replies.is_empty() {
            continue;
        }
        if !cx
            .reply_limit
            .allow(source.ip(), replies.len(), Instant::now())
        {
            Counters::inc(&cx.counters.replies_rate_limited);
            continue;
        }
        for reply in replies {
            match socket.send_to(&reply, source).await {
                Ok(_) => Counters::inc(&cx.counters.replies_sent),
                Err(e) => tracing::debug!(%source, error = %e, "UDP reply not sent."),
            }
        }
    }
}
