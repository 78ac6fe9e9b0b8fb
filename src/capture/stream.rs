//! SIP over a byte stream (TCP, or TLS after its handshake): framed by Content-Length, several
//! messages per connection, CRLF keep-alives tolerated, every resource bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::CaptureContext;
use super::inspect::Meta;
use crate::conn_limits::{self, ConnLimits};
use crate::event::Transport;
use crate::metrics::Counters;
use crate::sip::frame::{Frame, Framer};

/// Limits on connections and their lifetimes.
#[derive(Debug)]
pub struct StreamLimits {
    /// Open connections over all stream listeners, and from one source; more are closed at once.
    pub conns: Arc<ConnLimits>,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
}

/// Connections open at once, over all stream listeners: enough for scanners, bounded for memory
/// (each holds at most a 64 KiB buffer).
const MAX_CONNECTIONS: usize = 1024;
/// Connections from one address: a scanner needs one or two.
const MAX_CONNECTIONS_PER_SOURCE: usize = 16;
/// Idle time before a connection is closed; SIP clients send keep-alives every 30 s or so.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a TLS client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a message has to arrive whole once its first byte is in: a slow sender cannot hold a
/// connection slot by trickling a byte a minute.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a reply has to be taken by the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a socket at once.
const READ_CHUNK_BYTES: usize = 8 * 1024;

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            conns: Arc::new(ConnLimits::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE)),
            idle_timeout: IDLE_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// Accepts connections until cancelled; each is handled by `handle_conn` on the tracker.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    transport: Transport,
    cx: Arc<CaptureContext>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    on_conn: F,
) where
    F: Fn(TcpStream, SocketAddr, SocketAddr, Arc<CaptureContext>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    while let Some((stream, peer)) = conn_limits::accept(&listener, &cancel).await {
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        tracker.spawn(
            on_conn(stream, peer, local, cx.clone(), cancel.clone())
                .instrument(tracing::debug_span!("conn", %transport, %peer)),
        );
    }
}

/// Handles one plain TCP connection.
pub async fn handle_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    cx: Arc<CaptureContext>,
    cancel: CancellationToken,
) {
    let Some(_slot) = cx.stream_limits.conns.admit(peer.ip()) else {
        Counters::inc(&cx.counters.connections_refused);
        return;
    };
    Counters::inc(&cx.counters.connections_accepted);
    serve_stream(
        stream,
        Meta {
            transport: Transport::Tcp,
            source: peer,
            local,
        },
        &cx,
        &cancel,
    )
    .await;
}

/// Reads framed SIP messages from a stream until it closes, idles out, misbehaves or intake stops.
pub async fn serve_stream<S>(
    mut stream: S,
    meta: Meta,
    cx: &CaptureContext,
    cancel: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut framer = Framer::default();
    let mut partial_since: Option<Instant> = None;
    loop {
        // Take every whole message already buffered.
        loop {
            match framer.next(&buf) {
                Ok(Frame::KeepAlive(n)) => {
                    let _ = buf.split_to(n.min(buf.len()));
                }
                Ok(Frame::Message(n)) => {
                    let msg = buf.split_to(n.min(buf.len()));
                    for reply in cx.handle(&msg, &meta) {
                        // A client that never reads must not hold the task (or shutdown) forever.
                        let written = tokio::select! {
                            biased;
                            _ = cancel.cancelled() => return,
                            r = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&reply)) => r,
                        };
                        if !matches!(written, Ok(Ok(()))) {
                            tracing::debug!("Closing a stream that does not take its replies.");
                            return;
                        }
                        Counters::inc(&cx.counters.replies_sent);
                    }
                }
                Ok(Frame::Incomplete) => break,
                Err(e) => {
                    Counters::inc(&cx.counters.streams_rejected);
                    tracing::debug!(error = %e, "Closing a stream that cannot be framed.");
                    let _ = stream.shutdown().await;
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES {
            buf.reserve(READ_CHUNK_BYTES);
        }
        // A message begun must be finished in time; between messages the idle timeout applies.
        let wait = if buf.is_empty() {
            partial_since = None;
            cx.stream_limits.idle_timeout
        } else {
            let since = *partial_since.get_or_insert_with(Instant::now);
            MESSAGE_TIMEOUT.saturating_sub(since.elapsed())
        };
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(wait, stream.read_buf(&mut buf)) => r,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => {
                if !buf.iter().all(|b| b.is_ascii_whitespace()) {
                    Counters::inc(&cx.counters.streams_rejected);
                    tracing::debug!(len = buf.len(), "Stream closed mid-message.");
                }
                return;
            }
            Ok(Ok(_)) => {}
            Err(_) => {
                if partial_since.is_some() {
                    Counters::inc(&cx.counters.streams_rejected);
                    tracing::debug!(
                        len = buf.len(),
                        "Closing a stream whose message never completed."
                    );
                } else {
                    tracing::debug!("Closing an idle stream.");
                }
                return;
            }
        }
    }
}
