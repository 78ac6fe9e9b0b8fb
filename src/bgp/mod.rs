//! The BGP blackhole feed: an announce-only BGP speaker that gives routers a /32 or /128 for
//! every listed bad actor, so they can drop its traffic at the edge (remotely triggered
//! blackholing: the routes carry the BLACKHOLE and NO_EXPORT communities and the operator's
//! discard next hop).
//!
//! - `wire`: the messages, as bytes (pure, unit-tested);
//! - `table`: which addresses are announced (pure): the bad-actor set's listings, capped at
//!   `--bgp-max-routes`, the longest-listed kept;
//! - `feed`: fills the table from the database: a full read at start, then the store's change
//!   sequence every second (and soon after a probe), and listings that end on the clock;
//! - `session`: per neighbour, the connection (outbound with backoff, and inbound from its
//!   address), the OPEN exchange, keepalives and hold timer, a full announcement once
//!   established, then the table's changes; a Cease on shutdown.
//!
//! Nothing a peer sends is installed: UPDATEs are counted and dropped unread. The feed is an
//! output of the node (`OutputConfig`): its queue's events only hasten the next read of the
//! store; the node's shutdown (`BuildContext::shutdown`) ends the sessions with a Cease.

mod feed;
mod session;
pub mod table;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::output::{BuildContext, BuildError, Output, OutputConfig, QueuePolicy, Running};
use crate::pipeline::OutputQueue;
use crate::settings::ConfigError;
pub use wire::Community;

/// The BGP port.
pub const DEFAULT_PORT: u16 = 179;
/// Routes announced at most, by default.
pub const DEFAULT_MAX_ROUTES: usize = 100_000;
/// The hold time we offer: the usual 90 seconds (keepalives every 30).
pub const HOLD_TIME: u16 = 90;

/// The feed's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// Neighbours: connected to, and accepted from (by address).
    pub neighbors: Vec<SocketAddr>,
    /// Where to accept neighbours' connections; `None`: outbound only.
    pub listen: Option<SocketAddr>,
    pub local_as: u32,
    pub peer_as: u32,
    pub router_id: Ipv4Addr,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    pub communities: Vec<Community>,
    pub max_routes: usize,
}

/// The raw values, from the command line, the environment or the config file.
#[derive(Debug, Default, Clone)]
pub struct RawBgpConfig {
    pub neighbors: Vec<String>,
    pub listen: Option<String>,
    pub local_as: Option<String>,
    pub peer_as: Option<String>,
    pub router_id: Option<String>,
    pub next_hops: Vec<String>,
    pub communities: Vec<String>,
    pub max_routes: Option<String>,
}

impl RawBgpConfig {
    fn is_empty(&self) -> bool {
        self.neighbors.is_empty()
            && self.listen.is_none()
            && self.local_as.is_none()
            && self.peer_as.is_none()
            && self.router_id.is_none()
            && self.next_hops.is_empty()
            && self.communities.is_empty()
            && self.max_routes.is_none()
    }
}

/// `ADDR` or `ADDR:PORT` (`[v6]:PORT`), the port defaulting to 179.
fn parse_endpoint(option: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    let t = s.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    t.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
        .map_err(|_| {
            ConfigError::new(
                option,
                s,
                "expected an address with an optional port: 192.0.2.1, 192.0.2.1:179, [2001:db8::1]:179",
            )
        })
}

fn parse_as(option: &str, s: &str) -> Result<u32, ConfigError> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n != 0 && *n != u32::from(wire::AS_TRANS))
        .ok_or_else(|| ConfigError::new(option, s, "expected an AS number from 1 to 4294967295"))
}

impl BgpConfig {
    /// The feed's settings, or `None` when no neighbour is configured. Any other BGP setting
    /// without a neighbour is an error, so a typo does not silently leave routers unfed.
    pub fn resolve(raw: RawBgpConfig) -> Result<Option<BgpConfig>, ConfigError> {
        if raw.neighbors.is_empty() {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(ConfigError::new(
                "--bgp-neighbor",
                "",
                "BGP settings are given but no neighbour to announce to",
            ));
        }
        let neighbors = raw
            .neighbors
            .iter()
            .map(|n| parse_endpoint("--bgp-neighbor", n))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, n) in neighbors.iter().enumerate() {
            if n.ip().is_unspecified() || n.port() == 0 {
                return Err(ConfigError::new(
                    "--bgp-neighbor",
                    n,
                    "a neighbour needs an address and a port",
                ));
            }
            if neighbors[..i].iter().any(|o| o.ip() == n.ip()) {
                return Err(ConfigError::new(
                    "--bgp-neighbor",
                    n,
                    "one neighbour per address (inbound connections are matched by address)",
                ));
            }
        }
        let listen = raw
            .listen
            .as_deref()
            .map(|l| parse_endpoint("--bgp-listen", l))
            .transpose()?;
        let local_as = match &raw.local_as {
            Some(s) => parse_as("--bgp-local-as", s)?,
            None => {
                return Err(ConfigError::new(
                    "--bgp-local-as",
                    "",
                    "required with --bgp-neighbor",
                ));
            }
        };
        let peer_as = match &raw.peer_as {
            Some(s) => parse_as("--bgp-peer-as", s)?,
            None => {
                return Err(ConfigError::new(
                    "--bgp-peer-as",
                    "",
                    "required with --bgp-neighbor",
                ));
            }
        };
        let (mut next_hop_v4, mut next_hop_v6) = (None, None);
        for h in &raw.next_hops {
            match h.trim().parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) if next_hop_v4.is_none() && !v4.is_unspecified() => {
                    next_hop_v4 = Some(v4)
                }
                Ok(IpAddr::V6(v6)) if next_hop_v6.is_none() && !v6.is_unspecified() => {
                    next_hop_v6 = Some(v6)
                }
                Ok(_) => {
                    return Err(ConfigError::new(
                        "--bgp-next-hop",
                        h,
                        "one IPv4 and one IPv6 next hop at most, neither unspecified",
                    ));
                }
                Err(_) => {
                    return Err(ConfigError::new(
                        "--bgp-next-hop",
                        h,
                        "expected an IPv4 or IPv6 address (your discard address)",
                    ));
                }
            }
        }
        if next_hop_v4.is_none() && next_hop_v6.is_none() {
            return Err(ConfigError::new(
                "--bgp-next-hop",
                "",
                "required with --bgp-neighbor: the address your routers discard traffic to (IPv4, IPv6 or both)",
            ));
        }
        let router_id = match (&raw.router_id, next_hop_v4) {
            (Some(s), _) => s
                .trim()
                .parse::<Ipv4Addr>()
                .ok()
                .filter(|a| !a.is_unspecified())
                .ok_or_else(|| {
                    ConfigError::new(
                        "--bgp-router-id",
                        s,
                        "expected an IPv4 address other than 0.0.0.0",
                    )
                })?,
            (None, Some(v4)) => v4,
            (None, None) => {
                return Err(ConfigError::new(
                    "--bgp-router-id",
                    "",
                    "required when no IPv4 next hop is given",
                ));
            }
        };
        let communities = if raw.communities.is_empty() {
            vec![wire::BLACKHOLE, wire::NO_EXPORT]
        } else {
            raw.communities
                .iter()
                .map(|c| {
                    c.parse::<Community>()
                        .map_err(|e| ConfigError::new("--bgp-community", c, e))
                })
                .collect::<Result<_, _>>()?
        };
        let max_routes = match &raw.max_routes {
            None => DEFAULT_MAX_ROUTES,
            Some(s) => s
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=10_000_000).contains(n))
                .ok_or_else(|| {
                    ConfigError::new(
                        "--bgp-max-routes",
                        s,
                        "expected a number of routes from 1 to 10000000",
                    )
                })?,
        };
        Ok(Some(BgpConfig {
            neighbors,
            listen,
            local_as,
            peer_as,
            router_id,
            next_hop_v4,
            next_hop_v6,
            communities,
            max_routes,
        }))
    }

    /// The families we offer: those we have a next hop for.
    pub(crate) fn families(&self) -> Vec<wire::Family> {
        let mut f = Vec::new();
        if self.next_hop_v4.is_some() {
            f.push(wire::Family::Ipv4Unicast);
        }
        if self.next_hop_v6.is_some() {
            f.push(wire::Family::Ipv6Unicast);
        }
        f
    }

    /// Whether an address can be announced at all (a next hop of its family is configured).
    pub(crate) fn announceable(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.next_hop_v4.is_some(),
            IpAddr::V6(_) => self.next_hop_v6.is_some(),
        }
    }
}

/// A session's state, as RFC 4271 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum State {
    Idle = 0,
    Connect = 1,
    Active = 2,
    OpenSent = 3,
    OpenConfirm = 4,
    Established = 5,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connect => "connect",
            State::Active => "active",
            State::OpenSent => "open_sent",
            State::OpenConfirm => "open_confirm",
            State::Established => "established",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Connect,
            2 => State::Active,
            3 => State::OpenSent,
            4 => State::OpenConfirm,
            5 => State::Established,
            _ => State::Idle,
        }
    }
}

/// One neighbour's numbers.
#[derive(Debug)]
pub struct NeighborStats {
    pub addr: SocketAddr,
    state: AtomicU8,
    /// When the session became established, while it is.
    established_at: Mutex<Option<Instant>>,
    /// Routes the neighbour has from us now.
    pub routes: AtomicU64,
    /// Route announcements sent (a full re-announcement counts every route again).
    pub announced: AtomicU64,
    /// Route withdrawals sent.
    pub withdrawn: AtomicU64,
    /// Established sessions that went down.
    pub flaps: AtomicU64,
    /// Sessions established.
    pub established_total: AtomicU64,
    /// UPDATE messages received and ignored (this speaker installs nothing).
    pub updates_ignored: AtomicU64,
    /// Other messages received (OPEN, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH).
    pub messages_received: AtomicU64,
    /// Why the last session ended or the last connection failed.
    last_error: Mutex<Option<String>>,
}

impl NeighborStats {
    fn new(addr: SocketAddr) -> NeighborStats {
        NeighborStats {
            addr,
            state: AtomicU8::new(State::Idle as u8),
            established_at: Mutex::new(None),
            routes: AtomicU64::new(0),
            announced: AtomicU64::new(0),
            withdrawn: AtomicU64::new(0),
            flaps: AtomicU64::new(0),
            established_total: AtomicU64::new(0),
            updates_ignored: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub(crate) fn set_state(&self, s: State) {
        let was = State::from_u8(self.state.swap(s as u8, Ordering::Relaxed));
        let mut at = self
            .established_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if s == State::Established && was != State::Established {
            *at = Some(Instant::now());
            self.established_total.fetch_add(1, Ordering::Relaxed);
        } else if s != State::Established {
            if was == State::Established {
                self.flaps.fetch_add(1, Ordering::Relaxed);
                self.routes.store(0, Ordering::Relaxed);
            }
            *at = None;
        }
    }

    pub(crate) fn set_error(&self, e: impl Into<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.into());
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn uptime_seconds(&self) -> u64 {
        self.established_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(0, |t| t.elapsed().as_secs())
    }

    fn json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "neighbor": self.addr.to_string(),
            "state": self.state().name(),
            "established_seconds": self.uptime_seconds(),
            "routes": get(&self.routes),
            "announced": get(&self.announced),
            "withdrawn": get(&self.withdrawn),
            "flaps": get(&self.flaps),
            "established_total": get(&self.established_total),
            "updates_ignored": get(&self.updates_ignored),
            "messages_received": get(&self.messages_received),
            "last_error": self.last_error(),
        })
    }
}

/// The feed's numbers, for `/bgp`, `/health-check` and `/metrics`.
#[derive(Debug)]
pub struct BgpStats {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub max_routes: usize,
    pub neighbors: Vec<Arc<NeighborStats>>,
    /// Addresses listed now and announceable.
    pub listed: AtomicU64,
    /// Of those, announced (within `--bgp-max-routes`).
    pub announced: AtomicU64,
    /// Listed but not announced: beyond `--bgp-max-routes`.
    pub over_limit: AtomicU64,
    /// Listings of an address whose family has no next hop: never announced.
    pub no_next_hop: AtomicU64,
    /// Inbound connections from addresses that are not neighbours, closed at once.
    pub connections_refused: AtomicU64,
    /// Reads of the store that failed (retried on the next poll).
    pub read_errors: AtomicU64,
}

impl BgpStats {
    fn new(c: &BgpConfig) -> BgpStats {
        BgpStats {
            local_as: c.local_as,
            router_id: c.router_id,
            max_routes: c.max_routes,
            neighbors: c
                .neighbors
                .iter()
                .map(|a| Arc::new(NeighborStats::new(*a)))
                .collect(),
            listed: AtomicU64::new(0),
            announced: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
            no_next_hop: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
        }
    }

    /// Everything, as `GET /bgp` and `/health-check` show it.
    pub fn json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "local_as": self.local_as,
            "router_id": self.router_id.to_string(),
            "max_routes": self.max_routes,
            "listed": get(&self.listed),
            "announced": get(&self.announced),
            "over_limit": get(&self.over_limit),
            "no_next_hop": get(&self.no_next_hop),
            "connections_refused": get(&self.connections_refused),
            "read_errors": get(&self.read_errors),
            "neighbors": self.neighbors.iter().map(|n| n.json()).collect::<Vec<_>>(),
        })
    }

    /// Prometheus families, appended to `/metrics`.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, kind, v) in [
            ("bgp_listed", "gauge", get(&self.listed)),
            ("bgp_announced", "gauge", get(&self.announced)),
            ("bgp_over_limit", "gauge", get(&self.over_limit)),
            ("bgp_no_next_hop_total", "counter", get(&self.no_next_hop)),
            (
                "bgp_connections_refused_total",
                "counter",
                get(&self.connections_refused),
            ),
            ("bgp_read_errors_total", "counter", get(&self.read_errors)),
        ] {
            let _ = writeln!(
                out,
                "# TYPE sentrypeer_{name} {kind}\nsentrypeer_{name} {v}"
            );
        }
        type Read = fn(&NeighborStats) -> u64;
        let families: [(&str, &str, Read); 8] = [
            ("bgp_session_established", "gauge", |n| {
                u64::from(n.state() == State::Established)
            }),
            ("bgp_session_state", "gauge", |n| n.state() as u64),
            ("bgp_routes", "gauge", |n| n.routes.load(Ordering::Relaxed)),
            ("bgp_announced_total", "counter", |n| {
                n.announced.load(Ordering::Relaxed)
            }),
            ("bgp_withdrawn_total", "counter", |n| {
                n.withdrawn.load(Ordering::Relaxed)
            }),
            ("bgp_flaps_total", "counter", |n| {
                n.flaps.load(Ordering::Relaxed)
            }),
            ("bgp_updates_ignored_total", "counter", |n| {
                n.updates_ignored.load(Ordering::Relaxed)
            }),
            ("bgp_established_seconds", "gauge", |n| n.uptime_seconds()),
        ];
        for (name, kind, read) in families {
            let _ = writeln!(out, "# TYPE sentrypeer_{name} {kind}");
            for n in &self.neighbors {
                let _ = writeln!(
                    out,
                    "sentrypeer_{name}{{neighbor=\"{}\"}} {}",
                    n.addr,
                    read(n)
                );
            }
        }
    }
}

/// How long shutdown waits for the Ceases to be sent.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl OutputConfig for BgpConfig {
    fn name(&self) -> &'static str {
        "bgp"
    }

    /// Events only hasten the next read of the store.
    fn queue(&self) -> Option<QueuePolicy> {
        Some(QueuePolicy::every(crate::output::OUTPUT_QUEUE_EVENTS))
    }

    /// Binds `--bgp-listen` (a bad address stops the node, naming it) and readies the feed.
    fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Output>, BuildError> {
        let listener = match self.listen {
            Some(addr) => Some(bind(addr).map_err(|e| ConfigError::new("--bgp-listen", addr, e))?),
            None => None,
        };
        if let Some(l) = &listener {
            let addr = l
                .local_addr()
                .map_err(|e| BuildError::Other(e.to_string()))?;
            tracing::info!(transport = %"BGP", %addr, "Listening.");
        }
        let stats = Arc::new(BgpStats::new(self));
        cx.bgp_stats = Some(stats.clone());
        let neighbors: Vec<String> = self.neighbors.iter().map(|n| n.to_string()).collect();
        tracing::info!(neighbors = %neighbors.join(","), local_as = self.local_as, peer_as = self.peer_as, max_routes = self.max_routes, "BGP feed enabled.");
        Ok(Box::new(Feed {
            config: Arc::new(self.clone()),
            listener,
            stats,
            db_file: cx.db_file.to_path_buf(),
            rules: cx.rules.clone(),
            shutdown: cx.shutdown.clone(),
        }))
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(64)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The built feed, ready to start.
struct Feed {
    config: Arc<BgpConfig>,
    listener: Option<std::net::TcpListener>,
    stats: Arc<BgpStats>,
    db_file: std::path::PathBuf,
    rules: Arc<crate::actors::Rules>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Output for Feed {
    fn start(self: Box<Self>, queue: Option<OutputQueue>) -> std::io::Result<Running> {
        let queue = queue.ok_or_else(|| std::io::Error::other("the BGP feed needs a queue"))?;
        let listener = self
            .listener
            .map(tokio::net::TcpListener::from_std)
            .transpose()?;
        let task = tokio::spawn(session::run(
            session::Start {
                config: self.config,
                stats: self.stats,
                db_file: self.db_file,
                rules: self.rules,
                listener,
                shutdown: self.shutdown,
            },
            queue,
        ));
        Ok(Running::Task {
            task,
            grace: STOP_GRACE,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(args: &[(&str, &str)]) -> RawBgpConfig {
        let mut r = RawBgpConfig {
            neighbors: vec!["192.0.2.10".into()],
            local_as: Some("65000".into()),
            peer_as: Some("65001".into()),
            next_hops: vec!["192.0.2.1".into()],
            ..RawBgpConfig::default()
        };
        for (k, v) in args {
            match *k {
                "neighbor" => r.neighbors.push(v.to_string()),
                "listen" => r.listen = Some(v.to_string()),
                "local-as" => r.local_as = Some(v.to_string()),
                "peer-as" => r.peer_as = Some(v.to_string()),
                "router-id" => r.router_id = Some(v.to_string()),
                "next-hop" => r.next_hops.push(v.to_string()),
                "community" => r.communities.push(v.to_string()),
                "max-routes" => r.max_routes = Some(v.to_string()),
                _ => panic!("{k}"),
            }
        }
        r
    }

    #[test]
    fn defaults_blackhole_no_export_and_the_next_hop_as_router_id() {
        let c = BgpConfig::resolve(raw(&[])).unwrap().unwrap();
        assert_eq!(c.neighbors, ["192.0.2.10:179".parse().unwrap()]);
        assert_eq!(c.communities, [wire::BLACKHOLE, wire::NO_EXPORT]);
        assert_eq!(c.router_id, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(c.max_routes, DEFAULT_MAX_ROUTES);
        assert!(c.listen.is_none());
        assert!(
            BgpConfig::resolve(RawBgpConfig::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn every_setting_is_read() {
        let c = BgpConfig::resolve(raw(&[
            ("neighbor", "[2001:db8::2]:1179"),
            ("listen", "127.0.0.1:0"),
            ("router-id", "10.0.0.1"),
            ("next-hop", "100::1"),
            ("community", "65000:666"),
            ("community", "65000:1:2"),
            ("max-routes", "5"),
            ("local-as", "4200000000"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.neighbors[1], "[2001:db8::2]:1179".parse().unwrap());
        assert_eq!(c.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.local_as, 4_200_000_000);
        assert_eq!(c.next_hop_v6, Some("100::1".parse().unwrap()));
        assert_eq!(
            c.communities,
            [
                Community::Standard(65000 << 16 | 666),
                Community::Large(65000, 1, 2)
            ]
        );
        assert_eq!(c.max_routes, 5);
        assert_eq!(c.families().len(), 2);
    }

    #[test]
    fn bad_values_name_their_option() {
        for (args, option) in [
            (vec![("neighbor", "nonsense")], "--bgp-neighbor"),
            (vec![("neighbor", "192.0.2.10:1179")], "--bgp-neighbor"),
            (vec![("listen", "here")], "--bgp-listen"),
            (vec![("local-as", "0")], "--bgp-local-as"),
            (vec![("peer-as", "4294967296")], "--bgp-peer-as"),
            (vec![("router-id", "::1")], "--bgp-router-id"),
            (vec![("next-hop", "192.0.2.2")], "--bgp-next-hop"),
            (vec![("next-hop", "discard")], "--bgp-next-hop"),
            (vec![("community", "65536:1")], "--bgp-community"),
            (vec![("max-routes", "0")], "--bgp-max-routes"),
        ] {
            let e = BgpConfig::resolve(raw(&args)).unwrap_err();
            assert_eq!(e.option, option, "{args:?}: {e}");
        }
        let mut r = raw(&[]);
        r.next_hops.clear();
        assert_eq!(BgpConfig::resolve(r).unwrap_err().option, "--bgp-next-hop");
        let mut r = raw(&[]);
        r.local_as = None;
        assert_eq!(BgpConfig::resolve(r).unwrap_err().option, "--bgp-local-as");
        let r = RawBgpConfig {
            local_as: Some("65000".into()),
            ..RawBgpConfig::default()
        };
        assert_eq!(BgpConfig::resolve(r).unwrap_err().option, "--bgp-neighbor");
        let r = RawBgpConfig {
            next_hops: vec!["100::1".into()],
            ..raw(&[])
        };
        assert_eq!(BgpConfig::resolve(r).unwrap_err().option, "--bgp-router-id");
    }

    #[test]
    fn a_state_change_counts_flaps_and_sessions() {
        let n = NeighborStats::new("192.0.2.10:179".parse().unwrap());
        n.set_state(State::OpenSent);
        n.set_state(State::Established);
        n.routes.store(5, Ordering::Relaxed);
        n.set_state(State::Idle);
        assert_eq!(n.flaps.load(Ordering::Relaxed), 1);
        assert_eq!(n.established_total.load(Ordering::Relaxed), 1);
        assert_eq!(n.routes.load(Ordering::Relaxed), 0);
        n.set_state(State::Active);
        assert_eq!(n.flaps.load(Ordering::Relaxed), 1);
    }
}
