//! The API's HTTP/1 server: hyper under the axum router, with what `axum::serve` leaves out
//! for a port that may face the internet. Connections are limited in total and per source,
//! a client has [`HEADER_READ_TIMEOUT`] to send each request's head (a new connection and an
//! idle keep-alive alike), and a client that stops reading a response is dropped after
//! [`WRITE_STALL_TIMEOUT`] without progress. A slow but reading client keeps its stream.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::conn_limits::{self, ConnLimits};
use crate::metrics::Counters;

/// Time a client has to send a request's head, from connecting or from the previous response.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Time a response may wait for the client to take any of it.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// API connections open at once, and from one source: a PBX dipping in on every call keeps a
/// few dozen at most; it takes sixteen sources (or /64s) to fill the API.
const MAX_CONNECTIONS: usize = 1024;
const MAX_CONNECTIONS_PER_SOURCE: usize = 64;
/// A request head larger than this is refused (431); the API's requests are a line or two.
/// (hyper's smallest allowed buffer is 8 KiB.)
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// The limits every API listener shares.
#[derive(Debug)]
pub struct ApiLimits {
    conns: Arc<ConnLimits>,
    header_read_timeout: Duration,
    write_stall_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            conns: Arc::new(ConnLimits::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE)),
            header_read_timeout: HEADER_READ_TIMEOUT,
            write_stall_timeout: WRITE_STALL_TIMEOUT,
        }
    }
}

/// Serves `router` on `listener` until `cancel`; then stops listening, lets open connections
/// finish their current response for up to `grace`, closes whatever is left and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Arc<ApiLimits>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    grace: Duration,
) {
    let conns = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    while let Some((stream, peer)) = conn_limits::accept(&listener, &cancel).await {
        conns.spawn(serve_conn(
            stream,
            peer.ip(),
            router.clone(),
            limits.clone(),
            counters.clone(),
            cancel.clone(),
            hard_stop.clone(),
        ));
    }
    // New connections are refused from now on, not left waiting in the backlog.
    drop(listener);
    conns.close();
    if tokio::time::timeout(grace, conns.wait()).await.is_err() {
        hard_stop.cancel();
        conns.wait().await;
        tracing::info!("Closed API connections that outlived the shutdown grace.");
    }
}

async fn serve_conn(
    stream: TcpStream,
    peer: IpAddr,
    router: Router,
    limits: Arc<ApiLimits>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    hard_stop: CancellationToken,
) {
    let Some(_slot) = limits.conns.admit(peer) else {
        Counters::inc(&counters.api_connections_refused);
        return;
    };
    let io = TokioIo::new(WriteStall::new(stream, limits.write_stall_timeout));
    // Each request learns where it came from (for per-source limits in the handlers).
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(ClientAddr(peer));
        router.clone().oneshot(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            // Finish the response in flight, take no new request; dropped at the hard stop.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                _ = hard_stop.cancelled() => return,
            }
        }
    };
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "API connection ended.");
    }
}

/// A stream whose writes fail with `TimedOut` once one has waited `limit` for the peer to take
/// any bytes. Each write that makes progress starts the clock again.
struct WriteStall<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteStall<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes a ready result through (progress: the clock stops); on pending, starts or checks
    /// the clock.
    fn watch<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let clock = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if clock.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_takes_fails_after_the_limit() {
        // A 64-byte pipe that nobody reads.
        let (a, _b) = tokio::io::duplex(64);
        let mut w = WriteStall::new(a, Duration::from_secs(30));
        let e = w.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_taking_bytes_is_not_cut_off() {
        let (a, mut b) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 64];
            loop {
                // Takes 64 bytes every 10 s: 160 s in all, each wait under the limit.
                tokio::time::sleep(Duration::from_secs(10)).await;
                match b.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got += n,
                }
            }
        });
        let mut w = WriteStall::new(a, Duration::from_secs(30));
        w.write_all(&[7u8; 1024]).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap(), 1024);
    }
}
