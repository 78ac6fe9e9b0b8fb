//! The speaker's tasks: the feed loop, the listener, and one task per neighbour running its
//! sessions one after another.
//!
//! A neighbour's task connects out (backing off 1 s, doubling to 60 s, with jitter, after a
//! failure; at once again after an established session ends) and takes the connections the
//! listener accepts from the neighbour's address. A session sends OPEN, checks the peer's
//! (version, AS, hold time), confirms with a KEEPALIVE, and once established announces the
//! whole table, then its changes as they come. Keepalives go out every third of the
//! negotiated hold time; a peer silent for the hold time gets a Hold Timer Expired. When both
//! sides connect at once, RFC 4271's rule decides which connection stays: the one opened by
//! the side with the higher BGP identifier, an established session always winning.
//!
//! A reader task per connection splits messages off the stream and counts what it drops
//! (every UPDATE), so the peer is always read while we write, and a stall on either side
//! cannot block the other.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::feed::Feed;
use super::table::Table;
use super::wire::{self, Family, Message, Open, RouteAttrs, WireError, error};
use super::{BgpConfig, BgpStats, HOLD_TIME, NeighborStats, State};
use crate::actors::Rules;
use crate::pipeline::OutputQueue;
use crate::store::ReadPool;

/// How often the store is read for changes.
const POLL: Duration = Duration::from_secs(1);
/// After an event, how long to wait for the writer to commit before reading.
const POLL_AFTER_EVENT: Duration = Duration::from_millis(150);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The hold timer while waiting for the peer's OPEN (RFC 4271 suggests 4 minutes).
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// How long one write may take before the session is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The hold timer when the peers agreed on none (hold time 0): a year.
const NO_HOLD: Duration = Duration::from_secs(365 * 86_400);
/// How long the Cease at shutdown may take.
const CEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the speaker starts with.
pub(super) struct Start {
    pub config: Arc<BgpConfig>,
    pub stats: Arc<BgpStats>,
    pub db_file: PathBuf,
    pub rules: Arc<Rules>,
    pub listener: Option<TcpListener>,
    /// The node's shutdown.
    pub shutdown: CancellationToken,
}

/// What every session shares.
struct Shared {
    config: Arc<BgpConfig>,
    table: Arc<Mutex<Table>>,
    /// The table's version, `None` until the store was first read (so a session established
    /// before that does not send an empty table and End-of-RIB).
    version: watch::Receiver<Option<u64>>,
    stop: CancellationToken,
}

/// Runs the feed, the listener and the neighbours until the node shuts down, then ends every
/// session with a Cease. Events from `queue` hasten the next read of the store.
pub(super) async fn run(start: Start, mut queue: OutputQueue) {
    let stop = start.shutdown.clone();
    let tasks = TaskTracker::new();
    let table = Arc::new(Mutex::new(Table::new(start.config.max_routes)));
    let (version_tx, version) = watch::channel(None);
    let poke = Arc::new(Notify::new());
    let feed = Feed::new(
        start.config.clone(),
        start.stats.clone(),
        start.rules.clone(),
        Arc::new(ReadPool::new(&start.db_file)),
        table.clone(),
    );
    tasks.spawn(feed_loop(feed, version_tx, poke.clone(), stop.clone()));
    let shared = Arc::new(Shared {
        config: start.config.clone(),
        table,
        version,
        stop: stop.clone(),
    });
    let mut inboxes = Vec::new();
    for n in &start.stats.neighbors {
        let (tx, rx) = mpsc::channel(4);
        inboxes.push((n.addr.ip().to_canonical(), tx));
        tasks.spawn(neighbor(shared.clone(), n.clone(), rx));
    }
    if let Some(listener) = start.listener {
        tasks.spawn(accept_loop(
            listener,
            inboxes,
            start.stats.clone(),
            stop.clone(),
        ));
    }
    tasks.close();
    let mut batch = Vec::new();
    let mut open = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            n = queue.recv_many(&mut batch, crate::output::MAX_BATCH), if open => {
                if n == 0 {
                    // No intake (`-R`), or shutting down: the store is still read every second.
                    open = false;
                    continue;
                }
                queue.stats.wrote(n);
                batch.clear();
                poke.notify_one();
            }
        }
    }
    tasks.wait().await;
    tracing::debug!("BGP feed stopped.");
}

/// Reads the store now, every second, and soon after events, and tells the sessions.
async fn feed_loop(
    feed: Feed,
    version: watch::Sender<Option<u64>>,
    poke: Arc<Notify>,
    stop: CancellationToken,
) {
    let feed = Arc::new(Mutex::new(feed));
    let mut failing = false;
    loop {
        let f = feed.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            let r = f.step();
            let v = f.table.lock().unwrap_or_else(|e| e.into_inner()).version();
            (r, v)
        })
        .await;
        match result {
            Ok((Ok(()), v)) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("BGP feed reading the database again.");
                }
                tracing::trace!(took = ?started.elapsed(), version = v, "BGP feed read the store.");
                version.send_if_modified(|old| old.replace(v) != Some(v));
            }
            Ok((Err(e), _)) => {
                if let Ok(f) = feed.lock() {
                    f.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                }
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "BGP feed cannot read the database; retrying.");
                }
            }
            Err(e) => tracing::warn!(error = %e, "BGP feed read task failed."),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
            _ = poke.notified() => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL_AFTER_EVENT) => {}
                }
            }
        }
    }
}

/// Hands each accepted connection to the neighbour with its address; others are closed.
async fn accept_loop(
    listener: TcpListener,
    inboxes: Vec<(IpAddr, mpsc::Sender<TcpStream>)>,
    stats: Arc<BgpStats>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "BGP accept failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let from = peer.ip().to_canonical();
        match inboxes.iter().find(|(ip, _)| *ip == from) {
            Some((_, tx)) => {
                if tx.try_send(stream).is_err() {
                    tracing::debug!(%peer, "BGP neighbour busy; connection closed.");
                }
            }
            None => {
                stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "BGP connection from a stranger closed.");
            }
        }
    }
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Outbound,
    Inbound,
}

/// How a session ended.
enum End {
    /// Shutdown: the Cease was sent.
    Stopped,
    /// Closed (by either side, or failed).
    Closed,
    /// Collision resolved in favour of this connection from the peer.
    Switch(TcpStream),
}

/// Runs one neighbour's sessions until shutdown.
async fn neighbor(
    shared: Arc<Shared>,
    n: Arc<NeighborStats>,
    mut inbound: mpsc::Receiver<TcpStream>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut connect_at = Instant::now();
    let mut next: Option<(TcpStream, Direction)> = None;
    loop {
        let (stream, dir) = match next.take() {
            Some(s) => s,
            None => {
                n.set_state(State::Active);
                let connect = async {
                    tokio::time::sleep_until(connect_at).await;
                    n.set_state(State::Connect);
                    connect_to(n.addr, shared.config.listen).await
                };
                tokio::select! {
                    _ = shared.stop.cancelled() => {
                        n.set_state(State::Idle);
                        return;
                    }
                    Some(s) = inbound.recv() => (s, Direction::Inbound),
                    r = connect => match r {
                        Ok(s) => (s, Direction::Outbound),
                        Err(e) => {
                            n.set_error(format!("connect: {e}"));
                            tracing::debug!(neighbor = %n.addr, error = %e, "BGP connect failed.");
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            connect_at = Instant::now() + jitter(backoff);
                            continue;
                        }
                    },
                }
            }
        };
        let mut session = Session::new(&shared, &n, dir);
        let end = session.run(stream, &mut inbound).await;
        let was_established = session.established;
        n.set_state(State::Idle);
        match end {
            End::Stopped => return,
            End::Switch(s) => next = Some((s, Direction::Inbound)),
            End::Closed => {
                if was_established {
                    backoff = BACKOFF_MIN;
                } else {
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                connect_at = Instant::now() + jitter(backoff);
            }
        }
    }
}

/// 75% to 100% of `d` (RFC 4271's jitter), from the clock's low bits.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.75 + f64::from(nanos % 1000) / 4000.0)
}

/// Connects to a neighbour, from the listen address when one is set (so the neighbour sees
/// one address for us).
async fn connect_to(addr: SocketAddr, listen: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(l) = listen.filter(|l| l.is_ipv4() == addr.is_ipv4() && !l.ip().is_unspecified()) {
        socket.bind(SocketAddr::new(l.ip(), 0))?;
    }
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}

/// What the reader task passes on.
enum Incoming {
    Message(Message),
    Error(WireError),
    Closed(String),
}

/// Reads messages off a connection: UPDATEs are counted and dropped, everything else passed on.
async fn read_loop(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    tx: mpsc::Sender<Incoming>,
    heard: Arc<Mutex<Instant>>,
    n: Arc<NeighborStats>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(2 * wire::MAX_MESSAGE);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let got = match rd.read(&mut chunk).await {
            Ok(0) => {
                let _ = tx.send(Incoming::Closed("closed by the peer".into())).await;
                return;
            }
            Ok(k) => k,
            Err(e) => {
                let _ = tx.send(Incoming::Closed(format!("read: {e}"))).await;
                return;
            }
        };
        buf.extend_from_slice(&chunk[..got]);
        *heard.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let mut at = 0;
        loop {
            match wire::next_message(&buf[at..]) {
                Ok(Some((m, used))) => {
                    at += used;
                    match m {
                        Message::Update => {
                            n.updates_ignored.fetch_add(1, Ordering::Relaxed);
                        }
                        Message::Keepalive => {
                            n.messages_received.fetch_add(1, Ordering::Relaxed);
                            // Only the first matters (it confirms the OPEN); the rest only
                            // refresh the hold timer, done above.
                            let _ = tx.try_send(Incoming::Message(m));
                        }
                        m => {
                            n.messages_received.fetch_add(1, Ordering::Relaxed);
                            if tx.send(Incoming::Message(m)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Incoming::Error(e)).await;
                    return;
                }
            }
        }
        buf.drain(..at);
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes with a deadline.
async fn send(wr: &mut OwnedWriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(bytes))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

/// Closes a connection the collision rule refused, with a Cease.
fn refuse(stream: TcpStream) {
    tokio::spawn(async move {
        let mut s = stream;
        let _ = tokio::time::timeout(
            CEASE_TIMEOUT,
            s.write_all(&wire::notification(
                error::CEASE,
                error::CEASE_COLLISION,
                &[],
            )),
        )
        .await;
        let _ = s.shutdown().await;
    });
}

/// One connection's session.
struct Session<'a> {
    shared: &'a Shared,
    n: &'a Arc<NeighborStats>,
    dir: Direction,
    state: State,
    established: bool,
    peer: Option<Open>,
    /// What the peer has from us.
    sent: HashSet<IpAddr>,
    /// The table version `sent` reflects.
    at_version: u64,
    /// The whole table was sent (after the store's first read).
    synced: bool,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, n: &'a Arc<NeighborStats>, dir: Direction) -> Session<'a> {
        Session {
            shared,
            n,
            dir,
            state: State::OpenSent,
            established: false,
            peer: None,
            sent: HashSet::new(),
            at_version: 0,
            synced: false,
        }
    }

    fn set_state(&mut self, s: State) {
        self.state = s;
        self.n.set_state(s);
    }

    /// Ends with a NOTIFICATION (best effort) and notes why.
    async fn fail(
        &mut self,
        wr: &mut OwnedWriteHalf,
        code: u8,
        subcode: u8,
        data: &[u8],
        why: String,
    ) -> End {
        let _ = tokio::time::timeout(
            CEASE_TIMEOUT,
            wr.write_all(&wire::notification(code, subcode, data)),
        )
        .await;
        let _ = wr.shutdown().await;
        self.closed(why)
    }

    fn closed(&mut self, why: String) -> End {
        tracing::info!(neighbor = %self.n.addr, state = self.state.name(), reason = %why, "BGP session down.");
        self.n.set_error(why);
        End::Closed
    }

    /// Which connection the collision rule keeps: the one opened by the higher identifier.
    fn winner(&self, peer_id: Ipv4Addr) -> Direction {
        if self.shared.config.router_id < peer_id {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    }

    async fn run(&mut self, stream: TcpStream, inbound: &mut mpsc::Receiver<TcpStream>) -> End {
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel(64);
        let heard = Arc::new(Mutex::new(Instant::now()));
        let _reader = AbortOnDrop(tokio::spawn(read_loop(
            rd,
            tx,
            heard.clone(),
            self.n.clone(),
        )));
        let config = &self.shared.config;
        let open = wire::open(
            config.local_as,
            HOLD_TIME,
            config.router_id,
            &config.families(),
        );
        self.set_state(State::OpenSent);
        if let Err(e) = send(&mut wr, &open).await {
            return self.closed(format!("write: {e}"));
        }
        let mut version = self.shared.version.clone();
        let mut hold = OPEN_HOLD;
        let mut keepalive_every: Option<Duration> = None;
        let mut next_keepalive = Instant::now();
        let mut pending: Option<TcpStream> = None;
        let mut feeding = true;
        loop {
            let hold_deadline = *heard.lock().unwrap_or_else(|e| e.into_inner()) + hold;
            let keepalives = keepalive_every.is_some() && self.state >= State::OpenConfirm;
            tokio::select! {
                _ = self.shared.stop.cancelled() => {
                    let _ = self.fail(&mut wr, error::CEASE, error::CEASE_ADMINISTRATIVE_SHUTDOWN, &[], "shutting down".into()).await;
                    return End::Stopped;
                }
                m = rx.recv() => {
                    let m = match m {
                        Some(Incoming::Message(m)) => m,
                        Some(Incoming::Error(e)) => {
                            let why = format!("bad message from the peer: {e}");
                            let end = self.fail(&mut wr, e.code, e.subcode, &e.data, why).await;
                            return pending.map_or(end, End::Switch);
                        }
                        Some(Incoming::Closed(why)) => {
                            let end = self.closed(why);
                            return pending.map_or(end, End::Switch);
                        }
                        None => return self.closed("reader stopped".into()),
                    };
                    match (m, self.state) {
                        (Message::Open(o), State::OpenSent) => {
                            if o.peer_as != config.peer_as {
                                let why = format!("peer AS {} is not the configured {}", o.peer_as, config.peer_as);
                                return self.fail(&mut wr, error::OPEN, error::OPEN_BAD_PEER_AS, &[], why).await;
                            }
                            if o.router_id == config.router_id && config.local_as == config.peer_as {
                                return self.fail(&mut wr, error::OPEN, error::OPEN_BAD_IDENTIFIER, &[], "the peer has our BGP identifier".into()).await;
                            }
                            if let Some(p) = pending.take() {
                                if self.dir == Direction::Outbound && self.winner(o.router_id) == Direction::Inbound {
                                    let _ = self.fail(&mut wr, error::CEASE, error::CEASE_COLLISION, &[], "connection collision: keeping the peer's".into()).await;
                                    return End::Switch(p);
                                }
                                refuse(p);
                            }
                            let negotiated = HOLD_TIME.min(o.hold_time);
                            hold = if negotiated == 0 { NO_HOLD } else { Duration::from_secs(u64::from(negotiated)) };
                            keepalive_every = (negotiated > 0).then(|| Duration::from_secs(u64::from(negotiated / 3).max(1)));
                            self.peer = Some(o);
                            if let Err(e) = send(&mut wr, &wire::keepalive()).await {
                                return self.closed(format!("write: {e}"));
                            }
                            next_keepalive = Instant::now() + keepalive_every.unwrap_or(Duration::ZERO);
                            self.set_state(State::OpenConfirm);
                        }
                        (Message::Keepalive, State::OpenConfirm) => {
                            self.set_state(State::Established);
                            self.established = true;
                            if let Some(p) = pending.take() {
                                refuse(p);
                            }
                            let peer = self.peer.as_ref().map(|p| (p.router_id, p.peer_as, p.four_octet));
                            tracing::info!(neighbor = %self.n.addr, direction = ?self.dir, peer = ?peer, "BGP session established.");
                            if version.borrow_and_update().is_some() {
                                if let Err(e) = self.sync(&mut wr).await {
                                    return self.closed(format!("write: {e}"));
                                }
                            }
                        }
                        (Message::Keepalive, _) | (Message::Update, _) | (Message::RouteRefresh, _) => {}
                        (Message::Notification { code, subcode, data }, _) => {
                            let text = String::from_utf8_lossy(&data[..data.len().min(128)]).into_owned();
                            let why = format!("NOTIFICATION {code}/{subcode} from the peer {text}");
                            let end = self.closed(why.trim().to_string());
                            return pending.map_or(end, End::Switch);
                        }
                        (Message::Open(_), _) => {
                            return self.fail(&mut wr, error::FSM, 0, &[], "OPEN out of turn".into()).await;
                        }
                    }
                }
                s = inbound.recv() => {
                    let Some(s) = s else { continue };
                    if self.established {
                        refuse(s);
                    } else if let Some(peer_id) = self.peer.as_ref().map(|p| p.router_id) {
                        if self.winner(peer_id) == self.dir {
                            refuse(s);
                        } else {
                            let _ = self.fail(&mut wr, error::CEASE, error::CEASE_COLLISION, &[], "connection collision: keeping the peer's".into()).await;
                            return End::Switch(s);
                        }
                    } else if self.dir == Direction::Inbound {
                        // The peer gave up on its first connection and opened another.
                        let _ = self.fail(&mut wr, error::CEASE, error::CEASE_COLLISION, &[], "the peer connected again".into()).await;
                        return End::Switch(s);
                    } else if let Some(old) = pending.replace(s) {
                        refuse(old);
                    }
                }
                _ = tokio::time::sleep_until(hold_deadline) => {
                    return self.fail(&mut wr, error::HOLD_TIMER_EXPIRED, 0, &[], "hold timer expired".into()).await;
                }
                _ = tokio::time::sleep_until(next_keepalive), if keepalives => {
                    if let Err(e) = send(&mut wr, &wire::keepalive()).await {
                        return self.closed(format!("write: {e}"));
                    }
                    next_keepalive = Instant::now() + keepalive_every.unwrap_or(Duration::ZERO);
                }
                changed = version.changed(), if self.established && feeding => {
                    if changed.is_err() {
                        // The feed has stopped: shutdown is under way.
                        feeding = false;
                        continue;
                    }
                    if let Err(e) = self.sync(&mut wr).await {
                        return self.closed(format!("write: {e}"));
                    }
                }
            }
        }
    }

    /// Brings the peer up to date with the table: everything at the start of a session (then
    /// End-of-RIB), after that what changed since the last sync.
    async fn sync(&mut self, wr: &mut OwnedWriteHalf) -> std::io::Result<()> {
        let full = !self.synced;
        let (announce, withdraw) = {
            let table = self.shared.table.lock().unwrap_or_else(|e| e.into_inner());
            let changes = if full {
                None
            } else {
                table.changes_since(self.at_version)
            };
            self.at_version = table.version();
            match changes {
                Some(c) => {
                    let (up, down): (Vec<_>, Vec<_>) = c.into_iter().partition(|(_, up)| *up);
                    (
                        up.into_iter()
                            .map(|(ip, _)| ip)
                            .filter(|ip| !self.sent.contains(ip))
                            .collect::<Vec<_>>(),
                        down.into_iter()
                            .map(|(ip, _)| ip)
                            .filter(|ip| self.sent.contains(ip))
                            .collect::<Vec<_>>(),
                    )
                }
                None => {
                    let now: HashSet<IpAddr> = table.announced().into_iter().collect();
                    let withdraw = self.sent.difference(&now).copied().collect();
                    let announce = now.difference(&self.sent).copied().collect();
                    (announce, withdraw)
                }
            }
        };
        let Some(peer) = self.peer.as_ref() else {
            return Ok(());
        };
        let config = &self.shared.config;
        let v4_ok = peer.accepts(Family::Ipv4Unicast) && config.next_hop_v4.is_some();
        let v6_ok = peer.accepts(Family::Ipv6Unicast) && config.next_hop_v6.is_some();
        let attrs = RouteAttrs {
            local_as: config.local_as,
            ibgp: config.local_as == config.peer_as,
            four_octet: peer.four_octet,
            next_hop_v4: config.next_hop_v4,
            next_hop_v6: config.next_hop_v6,
            communities: config.communities.clone(),
        };
        let (mut a4, mut a6, mut w4, mut w6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ip in &announce {
            match ip {
                IpAddr::V4(v) if v4_ok => a4.push(*v),
                IpAddr::V6(v) if v6_ok => a6.push(*v),
                _ => {}
            }
        }
        for ip in &withdraw {
            match ip {
                IpAddr::V4(v) => w4.push(*v),
                IpAddr::V6(v) => w6.push(*v),
            }
        }
        a4.sort_unstable();
        a6.sort_unstable();
        let mut out: Vec<u8> = Vec::new();
        for m in wire::withdraw_v4(&w4)
            .into_iter()
            .chain(wire::withdraw_v6(&w6))
            .chain(wire::announce_v4(&a4, &attrs))
            .chain(wire::announce_v6(&a6, &attrs))
        {
            out.extend_from_slice(&m);
        }
        if full {
            if v4_ok {
                out.extend_from_slice(&wire::end_of_rib(Family::Ipv4Unicast));
            }
            if v6_ok {
                out.extend_from_slice(&wire::end_of_rib(Family::Ipv6Unicast));
            }
        }
        if !out.is_empty() {
            send(wr, &out).await?;
        }
        for ip in &withdraw {
            self.sent.remove(ip);
        }
        self.sent.extend(a4.iter().map(|v| IpAddr::V4(*v)));
        self.sent.extend(a6.iter().map(|v| IpAddr::V6(*v)));
        let n = self.n;
        n.announced
            .fetch_add((a4.len() + a6.len()) as u64, Ordering::Relaxed);
        n.withdrawn
            .fetch_add(withdraw.len() as u64, Ordering::Relaxed);
        n.routes.store(self.sent.len() as u64, Ordering::Relaxed);
        self.synced = true;
        if full || a4.len() + a6.len() + withdraw.len() > 0 {
            tracing::debug!(neighbor = %n.addr, announced = a4.len() + a6.len(), withdrawn = withdraw.len(), routes = self.sent.len(), "BGP routes sent.");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::wire::BLACKHOLE;
    use tokio::io::AsyncReadExt;

    const ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const PEER_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    /// A neighbour task towards a fake peer listening on loopback.
    struct Rig {
        peer: TcpListener,
        table: Arc<Mutex<Table>>,
        version: watch::Sender<Option<u64>>,
        stop: CancellationToken,
        n: Arc<NeighborStats>,
        task: tokio::task::JoinHandle<()>,
        _inbound: mpsc::Sender<TcpStream>,
    }

    async fn rig(listed: &[IpAddr]) -> Rig {
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = peer.local_addr().unwrap();
        let config = Arc::new(BgpConfig {
            neighbors: vec![addr],
            listen: None,
            local_as: 65000,
            peer_as: 65001,
            router_id: ID,
            next_hop_v4: Some(ID),
            next_hop_v6: Some("100::1".parse().unwrap()),
            communities: vec![BLACKHOLE],
            max_routes: 10,
        });
        let mut t = Table::new(10);
        for ip in listed {
            t.set(*ip, Some(i64::MAX));
        }
        let (version, rx) = watch::channel(Some(t.version()));
        let table = Arc::new(Mutex::new(t));
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            config,
            table: table.clone(),
            version: rx,
            stop: stop.clone(),
        });
        let n = Arc::new(NeighborStats::new(addr));
        let (tx, inbound) = mpsc::channel(1);
        let task = tokio::spawn(neighbor(shared, n.clone(), inbound));
        Rig {
            peer,
            table,
            version,
            stop,
            n,
            task,
            _inbound: tx,
        }
    }

    /// One whole message: its type and its bytes.
    async fn read(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut m = vec![0u8; wire::HEADER_LEN];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut m))
            .await
            .expect("a message in time")
            .unwrap();
        let len = usize::from(u16::from_be_bytes([m[16], m[17]]));
        m.resize(len, 0);
        s.read_exact(&mut m[wire::HEADER_LEN..]).await.unwrap();
        (m[18], m)
    }

    /// Accepts the node's connection and completes the OPEN exchange as the peer.
    async fn establish(r: &Rig, peer_as: u32, hold: u16) -> TcpStream {
        let (mut s, _) = r.peer.accept().await.unwrap();
        let (kind, m) = read(&mut s).await;
        assert_eq!(kind, wire::OPEN);
        let Ok(Some((Message::Open(o), _))) = wire::next_message(&m) else {
            panic!("{m:?}")
        };
        assert_eq!(
            (o.peer_as, o.router_id, o.hold_time),
            (65000, ID, HOLD_TIME)
        );
        assert!(o.four_octet && o.accepts(Family::Ipv6Unicast));
        s.write_all(&wire::open(
            peer_as,
            hold,
            PEER_ID,
            &[Family::Ipv4Unicast, Family::Ipv6Unicast],
        ))
        .await
        .unwrap();
        s
    }

    fn contains(m: &[u8], part: &[u8]) -> bool {
        m.windows(part.len()).any(|w| w == part)
    }

    #[tokio::test]
    async fn the_table_then_its_changes_are_sent_and_shutdown_sends_a_cease() {
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let r = rig(&[v4, v6]).await;
        let mut s = establish(&r, 65001, 90).await;
        assert_eq!(read(&mut s).await.0, wire::KEEPALIVE);
        s.write_all(&wire::keepalive()).await.unwrap();
        // The IPv4 table, the IPv6 table, then End-of-RIB for each.
        let (k, m) = read(&mut s).await;
        assert!(
            k == wire::UPDATE && contains(&m, &[32, 198, 51, 100, 7]),
            "{m:?}"
        );
        let (_, m) = read(&mut s).await;
        assert!(contains(&m, &[0, 2, 1, 16]) && contains(&m, &[128, 0x20, 1, 0xd, 0xb8]));
        assert_eq!(read(&mut s).await.1, wire::end_of_rib(Family::Ipv4Unicast));
        assert_eq!(read(&mut s).await.1, wire::end_of_rib(Family::Ipv6Unicast));
        assert_eq!(r.n.state(), State::Established);
        assert_eq!(r.n.routes.load(Ordering::Relaxed), 2);

        // An UPDATE from the peer is ignored; a listing that ends is withdrawn.
        s.write_all(
            &wire::announce_v4(
                &["203.0.113.1".parse().unwrap()],
                &RouteAttrs {
                    local_as: 65001,
                    ibgp: false,
                    four_octet: true,
                    next_hop_v4: Some(PEER_ID),
                    next_hop_v6: None,
                    communities: vec![],
                },
            )[0],
        )
        .await
        .unwrap();
        let v = {
            let mut t = r.table.lock().unwrap();
            t.set(v4, None);
            t.version()
        };
        r.version.send(Some(v)).unwrap();
        let (k, m) = read(&mut s).await;
        assert_eq!(k, wire::UPDATE);
        assert_eq!(&m[19..26], &[0, 5, 32, 198, 51, 100, 7]);
        assert_eq!(r.n.withdrawn.load(Ordering::Relaxed), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.n.updates_ignored.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(r.n.updates_ignored.load(Ordering::Relaxed), 1);
        assert_eq!(r.n.routes.load(Ordering::Relaxed), 1);

        r.stop.cancel();
        let (k, m) = read(&mut s).await;
        assert_eq!((k, m[19], m[20]), (wire::NOTIFICATION, 6, 2));
        r.task.await.unwrap();
        assert_eq!(r.n.state(), State::Idle);
    }

    #[tokio::test]
    async fn a_peer_of_another_as_is_refused_with_bad_peer_as() {
        let r = rig(&[]).await;
        let mut s = establish(&r, 64999, 90).await;
        let (k, m) = read(&mut s).await;
        assert_eq!((k, m[19], m[20]), (wire::NOTIFICATION, 2, 2));
        r.stop.cancel();
        r.task.await.unwrap();
        assert!(r.n.last_error().unwrap().contains("64999"));
    }

    #[tokio::test]
    async fn keepalives_go_out_and_a_silent_peer_hits_the_hold_timer() {
        let r = rig(&[]).await;
        let mut s = establish(&r, 65001, 3).await;
        assert_eq!(read(&mut s).await.0, wire::KEEPALIVE);
        s.write_all(&wire::keepalive()).await.unwrap();
        let started = Instant::now();
        let mut keepalives = 0;
        loop {
            let (k, m) = read(&mut s).await;
            match k {
                wire::KEEPALIVE => keepalives += 1,
                wire::UPDATE => {}
                wire::NOTIFICATION => {
                    assert_eq!(m[19], error::HOLD_TIMER_EXPIRED);
                    break;
                }
                other => panic!("type {other}"),
            }
        }
        assert!(
            keepalives >= 2,
            "{keepalives} keepalives in a 3 s hold time"
        );
        assert!(started.elapsed() >= Duration::from_secs(2));
        r.stop.cancel();
        r.task.await.unwrap();
        assert_eq!(r.n.flaps.load(Ordering::Relaxed), 1);
    }
}
