//! Propagation benchmark: N real nodes (the whole app, in one process) on loopback, joined to
//! one bootstrap node and meshed by peer exchange; SIP probes sent to them round-robin at a
//! fixed rate; then, from every node's database, how long each event took from capture on its
//! origin (`event_timestamp`) to being stored by each other node (`created_at`), and how many
//! bytes all nodes wrote to each other per event (TCP payload after encryption, with the idle
//! traffic of an equally long quiet period subtracted).
//!
//! `cargo run --release --features p2p --example p2p_propagation -- [nodes] [events/s] [seconds]`
//! (defaults 20, 100, 30). See bench/p2p_propagation.sh.

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use sentrypeer::app::RunningApp;
use sentrypeer::cli::Cli;
use sentrypeer::config::{Config, Env};
use sentrypeer::p2p::validate::parse_timestamp;

/// No environment: the benchmark's nodes are configured by their arguments alone.
struct NoEnv;
impl Env for NoEnv {
    fn get(&self, _: &str) -> Option<String> {
        None
    }
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn probe(number: u64) -> Vec<u8> {
    format!(
        "OPTIONS sip:{number}@198.51.100.10 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-{number};rport\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:{number}@198.51.100.10>\r\n\
         From: <sip:{number}@198.51.100.10>;tag={number}\r\n\
         User-Agent: friendly-scanner\r\n\
         Call-ID: {number}-bench\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn start_node(dir: &std::path::Path, bootstrap: Option<&str>) -> RunningApp {
    let db = dir.join("sentrypeer.db");
    let mut argv: Vec<String> = [
        "sentrypeer",
        "--udp-listen",
        "127.0.0.1:0",
        "--tcp-listen",
        "127.0.0.1:0",
        "-N",
        "-p",
        "--p2p-listen",
        "/ip4/127.0.0.1/tcp/0",
        "--p2p-no-mdns",
        "--p2p-allow-private",
        // Every node is on 127.0.0.1 and all of them dial the first.
        "--p2p-max-per-ip",
        "1024",
        "-f",
    ]
    .map(String::from)
    .to_vec();
    argv.push(db.display().to_string());
    if let Some(b) = bootstrap {
        argv.push("-b".into());
        argv.push(b.into());
    }
    let config = Config::resolve(Cli::try_parse_from(argv).expect("arguments"), &NoEnv)
        .expect("configuration");
    match RunningApp::start(config).await {
        Ok(app) => app,
        Err(e) => panic!("node did not start: {e:?}"),
    }
}

/// User + system CPU time of this process so far, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

fn bytes_out(apps: &[RunningApp]) -> u64 {
    apps.iter()
        .filter_map(|a| a.p2p.as_ref())
        .map(|p| p.bytes_out.load(Ordering::Relaxed))
        .sum()
}

#[tokio::main]
async fn main() {
    let nodes = arg(1, 20) as usize;
    let rate = arg(2, 100);
    let seconds = arg(3, 30);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    let root = tempfile::tempdir().expect("temporary directory");
    let mut apps = Vec::new();
    for i in 0..nodes {
        let dir = root.path().join(format!("node{i}"));
        std::fs::create_dir_all(&dir).expect("node directory");
        let bootstrap = apps
            .first()
            .and_then(|a: &RunningApp| a.p2p.as_ref())
            .map(|p| p.listen[0].clone());
        apps.push(start_node(&dir, bootstrap.as_deref()).await);
    }
    // Wait until every node is in a mesh with at least a few others.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ready = 0;
        let mut links = 0;
        for a in &apps {
            let s = a
                .p2p
                .as_ref()
                .expect("p2p")
                .snapshot()
                .await
                .expect("snapshot");
            let meshed = s.peers.iter().filter(|p| p.in_mesh).count();
            links += s.peers_total;
            if meshed >= 3.min(nodes - 1) {
                ready += 1;
            }
        }
        if ready == nodes {
            println!(
                "nodes: {nodes}, connections per node: {:.1}",
                links as f64 / nodes as f64
            );
            break;
        }
        if Instant::now() >= deadline {
            // What each node sees, to tell a missing connection from a missing graft: each
            // peer as `node(its mesh size)`, `*` if in this node's mesh, with its score.
            let mut snaps = Vec::new();
            for a in &apps {
                snaps.push(a.p2p.as_ref().expect("p2p").snapshot().await);
            }
            let index = |id: &str| {
                snaps
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| s.peer_id == id))
            };
            let meshed =
                |s: &sentrypeer::p2p::PeersSnapshot| s.peers.iter().filter(|p| p.in_mesh).count();
            for (i, s) in snaps.iter().enumerate() {
                let Some(s) = s else { continue };
                let peers: Vec<String> = s
                    .peers
                    .iter()
                    .map(|p| {
                        let j = index(&p.peer_id);
                        let theirs = j.and_then(|j| snaps[j].as_ref()).map(meshed);
                        format!(
                            "{}{}({}) {:.1}",
                            if p.in_mesh { "*" } else { "" },
                            j.map_or("?".into(), |j| j.to_string()),
                            theirs.map_or("?".into(), |m| m.to_string()),
                            p.score.unwrap_or(f64::NAN)
                        )
                    })
                    .collect();
                eprintln!(
                    "node {i}: {} connections, {} in mesh: {}",
                    s.peers_total,
                    meshed(s),
                    peers.join(", ")
                );
            }
            panic!("mesh not formed: {ready}/{nodes}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let meshes settle, then measure idle traffic for as long as the run will take.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_start = bytes_out(&apps);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let idle = bytes_out(&apps) - idle_start;

    let targets: Vec<_> = apps.iter().map(|a| a.bound.udp[0]).collect();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let before = bytes_out(&apps);
    let cpu_before = cpu_seconds();
    let start = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let target = targets[i as usize % targets.len()];
        socket
            .send_to(&probe(900_000_000 + i), target)
            .expect("send a probe");
    }
    let sent_in = start.elapsed();
    // Wait until every database holds every event (or give up after a minute).
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = |i: usize| -> u64 {
        let path = root.path().join(format!("node{i}/sentrypeer.db"));
        rusqlite::Connection::open(path)
            .and_then(|c| c.query_row("SELECT count(*) FROM honey", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    loop {
        let have: u64 = (0..nodes).map(count).sum();
        if have >= total * nodes as u64 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wire = bytes_out(&apps) - before;

    let mut latencies = Vec::new();
    let mut received = 0u64;
    for i in 0..nodes {
        let path = root.path().join(format!("node{i}/sentrypeer.db"));
        let conn = rusqlite::Connection::open(path).expect("database");
        let mut stmt = conn
            .prepare(
                "SELECT event_timestamp, created_at FROM honey WHERE received_from_peer IS NOT NULL",
            )
            .expect("query");
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .expect("rows");
        for (captured, stored) in rows.flatten() {
            let (Some(c), Some(s)) = (
                parse_timestamp(&captured),
                parse_timestamp(&format!("{stored}000000")),
            ) else {
                continue;
            };
            received += 1;
            let d = s.duration_since(c).unwrap_or_default().as_secs_f64();
            latencies.push(d * 1000.0);
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let expected = total * (nodes as u64 - 1);
    println!(
        "events: {total} at {rate}/s over {:.1} s, round-robin across {nodes} nodes",
        sent_in.as_secs_f64()
    );
    println!(
        "deliveries: {received} of {expected} ({:.2}%)",
        received as f64 * 100.0 / expected as f64
    );
    println!(
        "propagation latency (capture on origin -> stored on peer), ms: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "CPU (whole process, user+sys) during the run: {cpu:.1} s = {:.0} us per delivery",
        cpu * 1e6 / received.max(1) as f64
    );
    let idle_per_s = idle as f64 / seconds as f64;
    let net = wire as f64 - idle_per_s * sent_in.as_secs_f64();
    println!(
        "bytes on the wire (all nodes, TCP after Noise): {wire} during the run, idle {:.0} B/s; per event: {:.0} B network-wide ({:.0} B per delivery), {:.0} B raw",
        idle_per_s,
        net / total as f64,
        net / expected as f64,
        wire as f64 / total as f64
    );
    for a in apps {
        a.shutdown().await;
    }
}
