//! The DNSBL's sockets: UDP (a few tasks on each socket: receive what has arrived, answer it,
//! send) and TCP (each message behind its 2-byte length, RFC 1035 §4.2.2 and RFC 7766), under
//! the same limits as the node's other TCP servers. Answers come from `wire`, verdicts from the
//! store through the node's rule.
//!
//! Datagrams that arrived together are answered in one read transaction: one WAL snapshot and
//! one set of file locks for the burst instead of one per query (the locks were a tenth of the
//! cost of an answer). Batches are natural, never timed: idle, a query is answered alone at
//! once; under load a burst is at most [`UDP_BURST`] queries, a few microseconds of snapshot.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::DnsblConfig;
use super::wire::{Listing, Lookup, Outcome, Responder, Transport};
use crate::actors::{Kind, Rules};
use crate::conn_limits::{self, ConnLimits};
use crate::metrics::Counters;
use crate::store::ReadPool;

/// The largest query read: real ones are under 300 bytes. A longer UDP datagram is cut here
/// (and then is no message); a longer TCP length closes the connection.
const MAX_QUERY_BYTES: usize = 4096;
/// UDP tasks per socket: enough to keep both cores busy while one waits on the database.
const UDP_TASKS: usize = 2;
/// The most datagrams a UDP task takes from its socket at once.
const UDP_BURST: usize = 32;
/// TCP connections open at once, and from one source (an IPv6 source per /64).
const MAX_TCP_CONNECTIONS: usize = 256;
const MAX_TCP_PER_SOURCE: usize = 16;
/// How long a TCP connection may sit idle between queries (RFC 7766 §6.2.3 asks for seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How long the rest of a query may take once its length has come, and an answer to be taken.
const TCP_IO: Duration = Duration::from_secs(5);
/// Store failures are logged at most this often (a failing disk must not flood the log).
const ERROR_LOG_INTERVAL_MS: i64 = 10_000;

/// The verdicts: the node's database and rule, nothing re-derived.
struct StoreLookup<'a> {
    conn: &'a rusqlite::Connection,
    rules: &'a Rules,
}

impl Lookup for StoreLookup<'_> {
    fn listing(&self, kind: Kind, key: &str, now_ms: i64) -> Result<Option<Listing>, String> {
        // A primary-key read in WAL mode: microseconds, never waiting for the writer, so it
        // runs here on the runtime thread as the API's lookups do.
        let row = crate::store::actors::get(self.conn, kind, key).map_err(|e| e.to_string())?;
        Ok(row.and_then(|r| {
            r.listed_until(kind, self.rules, now_ms)
                .map(|until_ms| Listing {
                    last_seen_ms: r.last_seen_ms,
                    count: r.count,
                    until_ms,
                })
        }))
    }
}

/// No database to read: every lookup fails (SERVFAIL).
struct Failing(String);

impl Lookup for Failing {
    fn listing(&self, _: Kind, _: &str, _: i64) -> Result<Option<Listing>, String> {
        Err(self.0.clone())
    }
}

/// What every DNSBL socket shares.
pub struct Dnsbl {
    responder: Responder,
    store: ReadPool,
    rules: Arc<Rules>,
    counters: Arc<Counters>,
    tcp_limits: Arc<ConnLimits>,
    last_error_log_ms: AtomicI64,
}

impl Dnsbl {
    pub fn new(
        config: &DnsblConfig,
        db_file: &Path,
        rules: Arc<Rules>,
        counters: Arc<Counters>,
    ) -> Result<Arc<Dnsbl>, String> {
        Ok(Arc::new(Dnsbl {
            responder: Responder::new(config)?,
            store: ReadPool::new(db_file),
            rules,
            counters,
            tcp_limits: Arc::new(ConnLimits::new(MAX_TCP_CONNECTIONS, MAX_TCP_PER_SOURCE)),
            last_error_log_ms: AtomicI64::new(i64::MIN),
        }))
    }

    /// One message in, its answer (if any) out, counted.
    pub fn handle(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        self.handle_all(&[query], transport).pop().flatten()
    }

    /// Messages that arrived together, answered (or not) in order, in one read transaction.
    pub fn handle_all(&self, queries: &[&[u8]], transport: Transport) -> Vec<Option<Vec<u8>>> {
        let now = crate::actors::now_ms();
        let together = queries.len() > 1;
        let answered = self.store.with(|c| {
            if together {
                c.prepare_cached("BEGIN")?.execute([])?;
            }
            let lookup = StoreLookup {
                conn: c,
                rules: &self.rules,
            };
            let out = queries
                .iter()
                .map(|q| self.counted(self.responder.answer(q, &lookup, now, transport), now))
                .collect();
            if together
                && c.prepare_cached("COMMIT")
                    .and_then(|mut s| s.execute([]))
                    .is_err()
            {
                let _ = c.execute_batch("ROLLBACK");
            }
            Ok(out)
        });
        answered.unwrap_or_else(|e| {
            let failing = Failing(e.to_string());
            queries
                .iter()
                .map(|q| self.counted(self.responder.answer(q, &failing, now, transport), now))
                .collect()
        })
    }

    fn counted(&self, reply: super::wire::Reply, now: i64) -> Option<Vec<u8>> {
        let c = &self.counters;
        Counters::inc(&c.dnsbl_queries);
        match reply.outcome {
            Outcome::Listed => Counters::inc(&c.dnsbl_listed),
            Outcome::NxDomain => Counters::inc(&c.dnsbl_nxdomain),
            Outcome::Refused => Counters::inc(&c.dnsbl_refused),
            Outcome::Malformed => Counters::inc(&c.dnsbl_malformed),
            Outcome::Failed => Counters::inc(&c.dnsbl_failed),
            Outcome::NoData => {}
        }
        if let Some(e) = reply.error {
            let last = self.last_error_log_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= ERROR_LOG_INTERVAL_MS
                && self
                    .last_error_log_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(error = %e, "DNSBL lookup failed; answering SERVFAIL.");
            }
        }
        reply.bytes
    }
}

/// Serves one address: its UDP socket and its TCP listener (bound to the same port by `app`),
/// every task on `tracker`. Returns the address.
pub fn spawn(
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    dnsbl: Arc<Dnsbl>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let udp = Arc::new(UdpSocket::from_std(udp)?);
    let addr = udp.local_addr()?;
    for _ in 0..UDP_TASKS {
        tracker.spawn(
            serve_udp(udp.clone(), dnsbl.clone(), cancel.clone())
                .instrument(tracing::info_span!("dnsbl_udp", %addr)),
        );
    }
    let listener = TcpListener::from_std(tcp)?;
    tracker.spawn(
        accept_loop(listener, dnsbl, cancel.clone(), tracker.clone())
            .instrument(tracing::info_span!("dnsbl_tcp", %addr)),
    );
    Ok(addr)
}

/// Waits for a datagram, takes whatever else has arrived (up to [`UDP_BURST`]), answers them
/// together and sends the answers.
async fn serve_udp(socket: Arc<UdpSocket>, dnsbl: Arc<Dnsbl>, cancel: CancellationToken) {
    let mut bufs = vec![[0u8; MAX_QUERY_BYTES]; UDP_BURST];
    let mut got: Vec<(usize, SocketAddr)> = Vec::with_capacity(UDP_BURST);
    loop {
        got.clear();
        let first = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut bufs[0]) => r,
        };
        match first {
            Ok(g) => got.push(g),
            Err(e) => {
                tracing::debug!(error = %e, "DNSBL receive failed.");
                continue;
            }
        }
        while got.len() < UDP_BURST {
            match socket.try_recv_from(&mut bufs[got.len()]) {
                Ok(g) => got.push(g),
                Err(_) => break,
            }
        }
        let queries: Vec<&[u8]> = got
            .iter()
            .zip(&bufs)
            .map(|((n, _), buf)| &buf[..*n])
            .collect();
        let answers = dnsbl.handle_all(&queries, Transport::Udp);
        for ((_, peer), answer) in got.iter().zip(answers) {
            let Some(answer) = answer else { continue };
            if let Err(e) = socket.send_to(&answer, *peer).await {
                tracing::debug!(error = %e, %peer, "DNSBL answer not sent.");
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    dnsbl: Arc<Dnsbl>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    while let Some((stream, peer)) = conn_limits::accept(&listener, &cancel).await {
        let Some(slot) = dnsbl.tcp_limits.admit(peer.ip()) else {
            Counters::inc(&dnsbl.counters.dnsbl_connections_refused);
            continue;
        };
        let (dnsbl, cancel) = (dnsbl.clone(), cancel.clone());
        tracker.spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = connection(stream, &dnsbl) => {}
            }
        });
    }
}

/// Queries on one connection, answered in order, until the client closes it, idles, sends
/// something that is not a query, or stalls.
async fn connection(mut stream: TcpStream, dnsbl: &Dnsbl) {
    let mut buf = vec![0u8; MAX_QUERY_BYTES];
    loop {
        let mut len = [0u8; 2];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n > MAX_QUERY_BYTES {
            Counters::inc(&dnsbl.counters.dnsbl_queries);
            Counters::inc(&dnsbl.counters.dnsbl_malformed);
            return;
        }
        let query = &mut buf[..n];
        if !matches!(
            tokio::time::timeout(TCP_IO, stream.read_exact(query)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        // A message with no answer (not a query) ends the connection: there is nothing to
        // send back, and what follows it cannot be trusted to be framed.
        let Some(answer) = dnsbl.handle(query, Transport::Tcp) else {
            return;
        };
        let Ok(size) = u16::try_from(answer.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(answer.len() + 2);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&answer);
        if !matches!(
            tokio::time::timeout(TCP_IO, stream.write_all(&out)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}
