//! SIP over a byte stream (TCP, or TLS after its handshake): framed by Content-Length, several
//! messages per connection, CRLF keep-alives tolerated, every resource bounded. A connection may
//! stay as long as it keeps sending: each message has `MESSAGE_TIMEOUT` from its own first byte,
//! so a busy trunk that always has the start of the next message buffered is never cut.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
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
/// Calls answered on one connection still to be hung up; more are answered but not hung up by
/// us.
const MAX_PENDING_HANGUPS: usize = 8;
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
    // BYEs of calls answered on this connection, due in order.
    let mut hangups: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    // When the first byte of the message now being buffered arrived, if any has.
    let mut partial_since: Option<Instant> = None;
    loop {
        // Take every whole message already buffered.
        loop {
            match framer.next(&buf) {
                Ok(Frame::KeepAlive(n)) => {
                    let _ = buf.split_to(n.min(buf.len()));
                    // Whatever follows begins a new message now.
                    partial_since = None;
                }
                Ok(Frame::Message(n)) => {
                    let msg = buf.split_to(n.min(buf.len()));
                    // The clock is per message: bytes left after this one start the next now.
                    partial_since = None;
                    let (replies, hangup) = cx.handle(&msg, &meta);
                    if let Some(bye) = hangup {
                        if hangups.len() < MAX_PENDING_HANGUPS {
                            hangups.push_back((Instant::now() + super::CALL_LENGTH, bye));
                        }
                    }
                    for reply in replies {
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
        let due = hangups.front().map(|(at, _)| *at);
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                let Some((_, bye)) = hangups.pop_front() else { continue };
                let written = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bye)).await;
                if !matches!(written, Ok(Ok(()))) {
                    tracing::debug!("Closing a stream that does not take its BYE.");
                    return;
                }
                Counters::inc(&cx.counters.replies_sent);
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;

    /// An OPTIONS probe over TCP, numbered so that each is its own message.
    fn probe(n: usize) -> Vec<u8> {
        format!(
            "OPTIONS sip:100@198.51.100.10 SIP/2.0\r\n\
             Via: SIP/2.0/TCP 203.0.113.9:5060;branch=z9hG4bK-{n}\r\n\
             Max-Forwards: 70\r\n\
             To: <sip:100@198.51.100.10>\r\n\
             From: <sip:100@198.51.100.10>;tag={n}\r\n\
             Call-ID: {n}-call\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn context() -> Arc<CaptureContext> {
        Arc::new(CaptureContext::new(
            Pipeline::default(),
            Arc::new(Counters::default()),
            uuid::Uuid::nil(),
            false,
            String::new(),
            crate::capture::trap::TrapConfig::default(),
        ))
    }

    /// Serves one end of an in-memory stream; the task returns when the stream was closed.
    fn serve(
        cx: &Arc<CaptureContext>,
        server: tokio::io::DuplexStream,
    ) -> tokio::task::JoinHandle<Instant> {
        let cx = cx.clone();
        let meta = Meta {
            transport: Transport::Tcp,
            source: "203.0.113.9:40000".parse().unwrap(),
            local: "198.51.100.10:5060".parse().unwrap(),
        };
        tokio::spawn(async move {
            serve_stream(server, meta, &cx, &CancellationToken::new()).await;
            Instant::now()
        })
    }

    fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_sending_whole_messages_back_to_back_is_never_cut() {
        let cx = context();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serving = serve(&cx, server);
        // Each message is split across two writes a third of the limit apart, so the start of
        // the next message is always buffered; the whole run lasts over three times the limit.
        let step = MESSAGE_TIMEOUT / 3;
        let messages = 10;
        let started = Instant::now();
        let mut carry = Vec::new();
        for n in 0..messages {
            let p = probe(n);
            let (head, tail) = p.split_at(p.len() / 2);
            carry.extend_from_slice(head);
            client
                .write_all(&carry)
                .await
                .unwrap_or_else(|e| panic!("cut after {:?}: {e}", started.elapsed()));
            carry = tail.to_vec();
            tokio::time::sleep(step).await;
        }
        client.write_all(&carry).await.unwrap();
        tokio::time::sleep(step).await;
        assert!(started.elapsed() >= MESSAGE_TIMEOUT * 3);
        assert!(!serving.is_finished(), "the stream was closed");
        assert_eq!(count(&cx.counters.events_accepted), messages as u64);
        assert_eq!(count(&cx.counters.streams_rejected), 0);
        drop(client);
        serving.await.unwrap();
        assert_eq!(count(&cx.counters.streams_rejected), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_trickled_after_a_whole_one_is_cut_at_the_limit_from_its_first_byte() {
        let cx = context();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serving = serve(&cx, server);
        let whole = probe(1);
        let stalled = probe(2);
        let (head, tail) = stalled.split_at(stalled.len() / 2);
        let begun = Instant::now();
        client
            .write_all(&[whole.as_slice(), head].concat())
            .await
            .unwrap();
        // A byte every few seconds keeps the connection from idling, not the message alive.
        for b in tail.iter().take(tail.len() - 1) {
            tokio::time::sleep(MESSAGE_TIMEOUT / 6).await;
            if serving.is_finished() || client.write_all(&[*b]).await.is_err() {
                break;
            }
        }
        let closed = serving.await.unwrap();
        let lasted = closed - begun;
        assert!(
            lasted >= MESSAGE_TIMEOUT && lasted < MESSAGE_TIMEOUT + Duration::from_secs(1),
            "closed after {lasted:?}"
        );
        assert_eq!(count(&cx.counters.events_accepted), 1);
        assert_eq!(count(&cx.counters.streams_rejected), 1);
    }
}
