//! Starts the node: opens the database and outputs, binds every socket (so bad addresses fail
//! before anything runs), spawns capture, API and output tasks, and shuts them down in order:
//! intake first, then every output drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::api::{self, ApiState};
use crate::capture::{self, CaptureContext};
use crate::config::{Config, ConfigError, Listen};
use crate::event::Transport;
use crate::metrics::Counters;
use crate::output;
use crate::pipeline::{OutputStats, PipelineBuilder};
use crate::store::{self, ReadPool};

/// The kernel receive buffer asked for on UDP sockets: room for a burst of about 10,000
/// probes while the receiving task is busy. The kernel caps it at `net.core.rmem_max`.
const UDP_RECV_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// How long API requests in progress may take to finish once shutdown starts.
const API_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Pending TCP connections the kernel queues for us.
const TCP_BACKLOG: i32 = 1024;

/// The addresses the node actually bound, by what they serve.
#[derive(Debug, Default, Clone)]
pub struct Bound {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub api: Vec<SocketAddr>,
    pub agent_udp: Vec<SocketAddr>,
    pub agent_tcp: Vec<SocketAddr>,
    /// The DNS blocklist's addresses, each served over UDP and TCP.
    pub dnsbl: Vec<SocketAddr>,
}

/// A started node.
pub struct RunningApp {
    pub bound: Bound,
    pub node_id: Uuid,
    /// The peer network, when `-p` is on.
    pub p2p: Option<Arc<crate::p2p::P2pHandle>>,
    cancel: CancellationToken,
    intake: TaskTracker,
    /// The started outputs, in start order; joined in reverse.
    outputs: Vec<(&'static str, output::Running)>,
    counters: Arc<Counters>,
    stats: Arc<Vec<Arc<OutputStats>>>,
    /// What the outputs asked to do on SIGHUP (reopen the JSON log).
    on_hangup: Vec<Box<dyn Fn() + Send + Sync>>,
}

/// Startup failed: a bad setting (exit 2) or something else (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

#[cfg(feature = "p2p")]
impl From<crate::p2p::StartError> for StartError {
    fn from(e: crate::p2p::StartError) -> Self {
        match e {
            crate::p2p::StartError::Config(e) => StartError::Config(e),
            crate::p2p::StartError::Other(e) => StartError::Other(e),
        }
    }
}

struct Sockets {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
    tls: Vec<std::net::TcpListener>,
    api: Vec<std::net::TcpListener>,
    agent_udp: Vec<std::net::UdpSocket>,
    agent_tcp: Vec<std::net::TcpListener>,
    /// UDP and TCP on the same address, for each DNSBL address.
    dnsbl: Vec<(std::net::UdpSocket, std::net::TcpListener)>,
}

impl RunningApp {
    /// Starts everything; must run inside a tokio runtime.
    pub async fn start(config: Config) -> Result<RunningApp, StartError> {
        let started = Instant::now();
        if let Some(path) = &config.created_config_file {
            tracing::info!(file = %path.display(), "Wrote a config file with upstream's defaults: it did not exist.");
        }
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let opened = store::open(&config.db_file)
            .map_err(|e| ConfigError::new("-f (--db-file)", config.db_file.display(), e))?;
        if opened.summarised > 0 {
            tracing::info!(
                events = opened.summarised,
                "Indexed events written by another program."
            );
        }
        let node_id = opened.node_id;
        let tls_config = if config.tls.is_empty() {
            None
        } else {
            let (tls, source) = capture::tls::server_config(&config.tls_files)?;
            if source == capture::tls::CertSource::Generated {
                tracing::info!(cert = %config.tls_files.cert.display(), key = %config.tls_files.key.display(), "Generated a self-signed TLS certificate.");
            }
            Some(tls)
        };
        if config.webhook.is_some() && !cfg!(feature = "webhook") {
            return Err(ConfigError::new(
                "-w (--webhook-url)",
                "…",
                "this build has no WebHook support (cargo feature `webhook`)",
            )
            .into());
        }
        if config.peers.is_some() && !cfg!(feature = "p2p") {
            return Err(ConfigError::new(
                "-p (--peer-to-peer)",
                "on",
                "this build has no peer-to-peer support (cargo feature `p2p`)",
            )
            .into());
        }
        if config.opendht.is_some() && !cfg!(feature = "opendht") {
            return Err(ConfigError::new(
                "--opendht",
                "on",
                "this build has no OpenDHT support (cargo feature `opendht`)",
            )
            .into());
        }
        if config.dnsbl.is_some() && !cfg!(feature = "dnsbl") {
            return Err(ConfigError::new(
                "--dnsbl-listen",
                "…",
                "this build has no DNSBL support (cargo feature `dnsbl`)",
            )
            .into());
        }
        let sockets = bind_all(&config)?;
        let rules = config.actors.rules()?;
        let mut writer = opened.writer;
        writer
            .set_rules(rules.clone())
            .context("applying the bad-actor rule to the database")?;
        writer.set_retention(config.actors.retention);
        writer.set_locate(
            config
                .geoip
                .clone()
                .map(|g| g as Arc<dyn crate::store::analytics::Locate>),
        );

        // Outputs: built in the configuration's order (all fallible setup), then started.
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let mut cx = output::BuildContext {
            node_id,
            db_file: &config.db_file,
            counters: counters.clone(),
            writer: Some(writer),
            webhook_stats: None,
            on_hangup: Vec::new(),
            rules: rules.clone(),
            bgp_stats: None,
            shutdown: cancel.clone(),
            kernel_sets: Vec::new(),
            live: None,
        };
        // The peer network is two halves: an output that shares this node's events, built and
        // started with the others (last), and an intake started below with the pipeline.
        #[cfg_attr(not(feature = "p2p"), allow(unused_mut))]
        let mut configs = config.outputs();
        #[cfg(feature = "p2p")]
        let peers_intake = config.peers.as_ref().map(|c| {
            let (output, intake) = crate::p2p::halves(c);
            configs.push(Box::new(output));
            intake
        });
        // OpenDHT likewise: its node runs (binding its port) before the outputs are built.
        #[cfg(feature = "opendht")]
        let opendht_intake = match &config.opendht {
            Some(c) => {
                let started = crate::opendht::start(c)?;
                configs.push(Box::new(started.output));
                Some(started.intake)
            }
            None => None,
        };
        let mut built = Vec::new();
        for c in configs {
            let out = c.build(&mut cx).map_err(|e| match e {
                output::BuildError::Config(e) => StartError::Config(e),
                output::BuildError::Other(e) => StartError::Other(anyhow::anyhow!(e)),
            })?;
            built.push((c.name(), c.queue(), out));
        }
        let output::BuildContext {
            webhook_stats,
            mut on_hangup,
            bgp_stats,
            kernel_sets,
            live,
            ..
        } = cx;
        if config.actors.allow_file.is_some() {
            let (actors, rules) = (config.actors.clone(), rules.clone());
            on_hangup.push(Box::new(move || actors.reload_allow_list(&rules)));
        }
        let mut builder = PipelineBuilder::default();
        let mut outputs = Vec::new();
        for (name, queue, out) in built {
            let queue = queue.map(|q| builder.output_of(name, q.events, q.local_only));
            let running = out
                .start(queue)
                .with_context(|| format!("cannot start the {name} output"))?;
            outputs.push((name, running));
        }
        let (pipeline, stats) = builder.build();
        let stats = Arc::new(stats);

        // Intake.
        let intake = TaskTracker::new();
        #[cfg(feature = "p2p")]
        let p2p = match peers_intake {
            Some(peers) => Some(Arc::new(
                peers
                    .start(crate::p2p::IntakeContext {
                        db_file: &config.db_file,
                        pipeline: pipeline.clone(),
                        counters: counters.clone(),
                        store: Arc::new(ReadPool::new(&config.db_file)),
                        sip_listen: sockets
                            .udp
                            .iter()
                            .filter_map(|s| s.local_addr().ok())
                            .chain(sockets.tcp.iter().filter_map(|s| s.local_addr().ok()))
                            .chain(sockets.tls.iter().filter_map(|s| s.local_addr().ok()))
                            .collect(),
                        cancel: cancel.clone(),
                        tracker: intake.clone(),
                    })
                    .await?,
            )),
            None => None,
        };
        #[cfg(not(feature = "p2p"))]
        let p2p: Option<Arc<crate::p2p::P2pHandle>> = None;
        #[cfg(feature = "opendht")]
        if let Some(dht) = opendht_intake {
            dht.start(crate::opendht::IntakeContext {
                node_id,
                pipeline: pipeline.clone(),
                counters: counters.clone(),
                store: Arc::new(ReadPool::new(&config.db_file)),
                cancel: cancel.clone(),
                tracker: intake.clone(),
            });
        }
        let cx = Arc::new(CaptureContext::new(
            pipeline,
            counters.clone(),
            node_id,
            config.responsive,
            config.server_header.clone(),
            config.trap.clone(),
        ));
        let mut bound = Bound::default();
        for s in sockets.udp {
            let socket = UdpSocket::from_std(s).context("registering a UDP socket")?;
            let addr = socket.local_addr().context("reading a UDP address")?;
            bound.udp.push(addr);
            intake.spawn(
                capture::udp::serve(socket, cx.clone(), cancel.clone())
                    .instrument(tracing::info_span!("udp", %addr)),
            );
        }
        for s in sockets.tcp {
            let listener = TcpListener::from_std(s).context("registering a TCP listener")?;
            bound
                .tcp
                .push(listener.local_addr().context("reading a TCP address")?);
            let t = intake.clone();
            intake.spawn(capture::stream::accept_loop(
                listener,
                Transport::Tcp,
                cx.clone(),
                cancel.clone(),
                t,
                capture::stream::handle_tcp,
            ));
        }
        if let Some(tls) = tls_config {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            for s in sockets.tls {
                let listener = TcpListener::from_std(s).context("registering a TLS listener")?;
                bound
                    .tls
                    .push(listener.local_addr().context("reading a TLS address")?);
                let t = intake.clone();
                let acceptor = acceptor.clone();
                intake.spawn(capture::stream::accept_loop(
                    listener,
                    Transport::Tls,
                    cx.clone(),
                    cancel.clone(),
                    t,
                    move |s, p, l, cx, c| capture::tls::handle(s, p, l, cx, c, acceptor.clone()),
                ));
            }
        }
        drop(cx);
        let agent_stats = Arc::new(crate::agent::AgentStats::default());
        if let Some(a) = &config.agent {
            let agent = Arc::new(crate::agent::Agent {
                store: Arc::new(ReadPool::new(&config.db_file)),
                rules: rules.clone(),
                stats: agent_stats.clone(),
                allow: a.allow_list(),
                source_header: a.source_header.clone(),
                divert: a.divert.clone(),
            });
            for s in sockets.agent_udp {
                bound
                    .agent_udp
                    .push(s.local_addr().context("reading an agent address")?);
                // One thread per core on the same socket: sipp and SBCs send checks in bursts
                // (a timer tick's worth at once), and each thread takes the next in line.
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                for _ in 0..threads {
                    let s = s.try_clone().context("sharing an agent socket")?;
                    let (agent, cancel) = (agent.clone(), cancel.clone());
                    let serving = tokio::task::spawn_blocking(move || {
                        crate::agent::serve_udp_blocking(s, &agent, &cancel)
                    });
                    intake.spawn(async move {
                        let _ = serving.await;
                    });
                }
            }
            for s in sockets.agent_tcp {
                let listener = TcpListener::from_std(s).context("registering an agent listener")?;
                bound
                    .agent_tcp
                    .push(listener.local_addr().context("reading an agent address")?);
                intake.spawn(crate::agent::serve_tcp(
                    listener,
                    agent.clone(),
                    cancel.clone(),
                    intake.clone(),
                ));
            }
        }
        if !sockets.api.is_empty() {
            let state = ApiState {
                store: Arc::new(ReadPool::new(&config.db_file)),
                counters: counters.clone(),
                outputs: stats.clone(),
                node_id,
                started,
                webhook: webhook_stats,
                kernel_sets: Arc::new(kernel_sets),
                p2p: p2p.clone(),
                rules: rules.clone(),
                apiban_keys: Arc::new(config.apiban_keys.clone()),
                agent: config.agent.as_ref().map(|_| agent_stats.clone()),
                bgp: bgp_stats.clone(),
                list_streams: Arc::new(crate::conn_limits::ConnLimits::new(
                    api::MAX_LIST_STREAMS,
                    api::MAX_LIST_STREAMS_PER_SOURCE,
                )),
                geoip: api::analytics::GeoStatus {
                    country: config.geoip.as_ref().is_some_and(|g| g.has_countries()),
                    asn: config.geoip.as_ref().is_some_and(|g| g.has_asns()),
                },
                live: live.clone(),
                live_streams: Arc::new(crate::conn_limits::ConnLimits::new(
                    api::analytics::MAX_LIVE_STREAMS,
                    api::analytics::MAX_LIVE_STREAMS_PER_SOURCE,
                )),
                shutdown: cancel.clone(),
            };
            let router = api::router(state);
            let api_limits = Arc::new(api::serve::ApiLimits::default());
            for s in sockets.api {
                let listener = TcpListener::from_std(s).context("registering the API listener")?;
                bound
                    .api
                    .push(listener.local_addr().context("reading the API address")?);
                // Graceful, but bounded: a client holding a half-sent request or reading a list
                // slowly must not keep the node from stopping.
                intake.spawn(api::serve::serve(
                    listener,
                    router.clone(),
                    api_limits.clone(),
                    counters.clone(),
                    cancel.clone(),
                    API_SHUTDOWN_GRACE,
                ));
            }
        }
        #[cfg(feature = "dnsbl")]
        if let Some(d) = &config.dnsbl {
            let dnsbl = crate::dnsbl::serve::Dnsbl::new(
                d,
                &config.db_file,
                rules.clone(),
                counters.clone(),
            )
            .map_err(|e| ConfigError::new("--dnsbl-zone", &d.zone, e))?;
            for (udp, tcp) in sockets.dnsbl {
                let addr = crate::dnsbl::serve::spawn(udp, tcp, dnsbl.clone(), &cancel, &intake)
                    .context("registering a DNSBL socket")?;
                bound.dnsbl.push(addr);
            }
        }
        #[cfg(not(feature = "dnsbl"))]
        drop(sockets.dnsbl); // none: refused above
        intake.close();
        for (transport, addrs) in [
            ("UDP", &bound.udp),
            ("TCP", &bound.tcp),
            ("TLS", &bound.tls),
            ("API", &bound.api),
            ("AGENT", &bound.agent_udp),
            ("AGENT-TCP", &bound.agent_tcp),
            ("DNSBL", &bound.dnsbl),
        ] {
            for addr in addrs {
                tracing::info!(%transport, %addr, "Listening.");
            }
        }
        tracing::info!(%node_id, responsive = config.responsive, db = %config.db_file.display(), "Ready.");
        Ok(RunningApp {
            bound,
            node_id,
            p2p,
            cancel,
            intake,
            outputs,
            counters,
            stats,
            on_hangup,
        })
    }

    /// Reopens the log files at their paths (SIGHUP, after logrotate moved them away). Never
    /// stops anything; a file that cannot be opened is warned about and the old one kept.
    pub fn reopen_logs(&self) {
        if self.on_hangup.is_empty() {
            tracing::debug!("Nothing to reopen on SIGHUP.");
        }
        for f in &self.on_hangup {
            f();
        }
    }

    /// Stops intake, lets every output drain, and returns when all is written.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.intake.wait().await;
        tracing::info!("Intake stopped; draining outputs.");
        // In reverse start order: an output fed through another (the WebHook, through the
        // database writer's outbox) was started before it and is joined after it.
        for (name, running) in self.outputs.into_iter().rev() {
            running.join(name).await;
        }
        let accepted = self
            .counters
            .events_accepted
            .load(std::sync::atomic::Ordering::Relaxed);
        let rejected: u64 = self
            .counters
            .snapshot()
            .iter()
            .filter(|(k, _)| k.starts_with("rejected_"))
            .map(|(_, v)| v)
            .sum();
        let mut summary = String::new();
        for o in self.stats.iter() {
            let get =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            summary.push_str(&format!(
                " {}: written={} dropped={} failed={};",
                o.name,
                get(&o.written),
                get(&o.dropped),
                get(&o.failed)
            ));
        }
        let dropped: u64 = self
            .stats
            .iter()
            .map(|o| o.dropped.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        tracing::info!(events_accepted = accepted, rejected, dropped, outputs = %summary.trim(), "Shutdown complete.");
    }
}

fn bind_all(config: &Config) -> Result<Sockets, ConfigError> {
    let mut s = Sockets {
        udp: vec![],
        tcp: vec![],
        tls: vec![],
        api: vec![],
        agent_udp: vec![],
        agent_tcp: vec![],
        dnsbl: vec![],
    };
    if let Some(agent) = &config.agent {
        for addr in &agent.listen {
            let l = Listen {
                addr: *addr,
                optional: false,
            };
            if let Some(sock) = bind(&l, "--agent-listen", Type::DGRAM)? {
                s.agent_udp.push(sock.into());
            }
            if let Some(sock) = bind(&l, "--agent-listen", Type::STREAM)? {
                s.agent_tcp.push(sock.into());
            }
        }
    }
    for l in &config.udp {
        if let Some(sock) = bind(l, "--udp-listen", Type::DGRAM)? {
            s.udp.push(sock.into());
        }
    }
    for (list, option, out) in [
        (&config.tcp, "--tcp-listen", &mut s.tcp),
        (&config.tls, "-z (--tls-listen)", &mut s.tls),
        (&config.api, "--api-listen", &mut s.api),
    ] {
        for l in list {
            if let Some(sock) = bind(l, option, Type::STREAM)? {
                out.push(sock.into());
            }
        }
    }
    for l in config.dnsbl.iter().flat_map(|d| &d.listen) {
        if let Some(pair) = bind_udp_and_tcp(l, "--dnsbl-listen")? {
            s.dnsbl.push(pair);
        }
    }
    Ok(s)
}

/// A UDP socket and a TCP listener on one port (DNS serves both). With port 0, the TCP
/// listener takes the port the kernel gave the UDP socket, trying again if it is taken.
fn bind_udp_and_tcp(
    l: &Listen,
    option: &str,
) -> Result<Option<(std::net::UdpSocket, std::net::TcpListener)>, ConfigError> {
    let mut tries = if l.addr.port() == 0 { 16 } else { 1 };
    loop {
        let Some(udp) = bind(l, option, Type::DGRAM)? else {
            return Ok(None);
        };
        let port = udp
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or(l.addr.port(), |a| a.port());
        let same = Listen {
            addr: SocketAddr::new(l.addr.ip(), port),
            optional: l.optional,
        };
        tries -= 1;
        match bind(&same, option, Type::STREAM) {
            Ok(Some(tcp)) => return Ok(Some((udp.into(), tcp.into()))),
            Ok(None) => return Ok(None),
            Err(_) if tries > 0 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Asks for a large UDP receive buffer: past `net.core.rmem_max` when the process may
/// (CAP_NET_ADMIN, `SO_RCVBUFFORCE`), else as much as the kernel allows.
fn grow_recv_buffer(socket: &Socket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a pointer to a live c_int, on a
    // descriptor this function borrows for the duration of the call.
    #[allow(unsafe_code)]
    let forced = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    if !forced {
        let _ = socket.set_recv_buffer_size(bytes);
    }
    if let Ok(got) = socket.recv_buffer_size() {
        if got < bytes {
            tracing::info!(
                requested = bytes,
                granted = got,
                "UDP receive buffer capped by net.core.rmem_max; raise it for bursts."
            );
        }
    }
}

/// Binds one socket; a default IPv6 address on a host without IPv6 is skipped with a warning.
fn bind(l: &Listen, option: &str, ty: Type) -> Result<Option<Socket>, ConfigError> {
    let attempt = || -> std::io::Result<Socket> {
        let proto = if ty == Type::DGRAM {
            Protocol::UDP
        } else {
            Protocol::TCP
        };
        let socket = Socket::new(Domain::for_address(l.addr), ty, Some(proto))?;
        if l.addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        if ty == Type::DGRAM {
            grow_recv_buffer(&socket, UDP_RECV_BUFFER_BYTES);
        } else {
            socket.set_reuse_address(true)?;
        }
        socket.bind(&l.addr.into())?;
        if ty == Type::STREAM {
            socket.listen(TCP_BACKLOG)?;
        }
        socket.set_nonblocking(true)?;
        Ok(socket)
    };
    match attempt() {
        Ok(s) => Ok(Some(s)),
        Err(e) if l.optional => {
            tracing::warn!(addr = %l.addr, error = %e, "Skipping a default IPv6 address.");
            Ok(None)
        }
        Err(e) => Err(ConfigError::new(option, l.addr, e)),
    }
}
