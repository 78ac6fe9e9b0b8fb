//! A hostile peer against one real node: the release binary (the victim) with a seeded
//! database and one honest peer (another release binary) connected to it; then a host that
//! cycles through fresh identities on loopback, each one flooding the victim with catch-up
//! requests and answering the victim's own catch-up requests with made-up valid events
//! (`tests/integration/sybil.rs`). While it runs, the honest peer records a probe every two
//! seconds and the time until the victim stores it is taken. At the end: the victim's peak
//! resident memory (`VmHWM` in `/proc/PID/status`), what its counters say, how much its
//! database grew, and how many standing rows it saved.
//!
//! `cargo run --release --features p2p --example p2p_hostile -- [identities] [concurrency] [hold ms]`
//! (defaults 10000, 6, 50). A refused dial is tried again 50 ms later under the same identity,
//! as a host that wants every identity in would. See bench/p2p_hostile.sh, which builds the
//! binary too.

#[allow(unreachable_pub)]
#[path = "../tests/integration/sybil.rs"]
mod sybil;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Events in the victim's database before the attack (what it serves).
const SEEDED: usize = 1_000;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The release binary beside this example (`target/release/sentrypeer`), or `SENTRYPEER_BIN`.
fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("SENTRYPEER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/release")
        .join("sentrypeer")
}

struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(dir: &Path, extra: &[String]) -> Proc {
        let mut child = Command::new(binary())
            .current_dir(dir)
            .args([
                "--udp-listen",
                "127.0.0.1:0",
                "--tcp-listen",
                "127.0.0.1:0",
                "-N",
                "--api-listen",
                "127.0.0.1:0",
                "-f",
                "sentrypeer.db",
                "-p",
                "--p2p-listen",
                "/ip4/127.0.0.1/tcp/0",
                "--p2p-no-mdns",
                "--p2p-allow-private",
            ])
            .args(extra)
            .env_remove("SENTRYPEER_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sentrypeer (build it with --release first)");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let ready = line.contains("Ready.");
                log2.lock().expect("log").push(line);
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the node became ready");
        Proc { child, log }
    }

    fn field(&self, transport: &str) -> String {
        let log = self.log.lock().expect("log");
        log.iter()
            .filter(|l| l.contains("Listening.") && l.contains(&format!("transport={transport}")))
            .find_map(|l| {
                let at = l.find(" addr=")? + 6;
                Some(
                    l[at..]
                        .split_whitespace()
                        .next()?
                        .trim_matches('"')
                        .to_string(),
                )
            })
            .expect("a listening address")
    }

    fn api(&self) -> SocketAddr {
        self.field("API").parse().expect("API address")
    }

    fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).expect("API");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

fn count(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("database");
    c.busy_timeout(Duration::from_secs(5)).ok();
    c.query_row(sql, [], |r| r.get(0)).unwrap_or(-1)
}

fn db_bytes(dir: &Path) -> u64 {
    ["sentrypeer.db", "sentrypeer.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn seed(dir: &Path) {
    let conn = rusqlite::Connection::open(dir.join("sentrypeer.db")).expect("database");
    conn.execute_batch(
        "CREATE TABLE honey (honey_id INTEGER PRIMARY KEY, event_timestamp TEXT, event_uuid TEXT,
          collected_method TEXT, source_ip TEXT, called_number TEXT, transport_type TEXT, method TEXT,
          user_agent TEXT, sip_message TEXT, created_by_node_id TEXT,
          created_at DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));",
    )
    .expect("schema");
    let tx = conn.unchecked_transaction().expect("transaction");
    for i in 0..SEEDED {
        tx.execute(
            "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip,
              called_number, transport_type, method, user_agent, sip_message, created_by_node_id)
             VALUES (?1, ?2, 'passive', ?3, ?4, 'UDP', 'OPTIONS', 'friendly-scanner',
              'OPTIONS sip:100@198.51.100.10 SIP/2.0', ?5)",
            rusqlite::params![
                sentrypeer::event::format_timestamp(
                    SystemTime::now() - Duration::from_secs(3600 + i as u64)
                ),
                uuid::Uuid::new_v4().hyphenated().to_string(),
                format!("203.0.113.{}", i % 250),
                format!("555{i:06}"),
                uuid::Uuid::nil().hyphenated().to_string(),
            ],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

fn probe(number: u64) -> Vec<u8> {
    format!(
        "OPTIONS sip:{number}@198.51.100.10 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-{number};rport\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:{number}@198.51.100.10>\r\n\
         From: <sip:{number}@198.51.100.10>;tag={number}\r\n\
         User-Agent: friendly-scanner\r\n\
         Call-ID: {number}-hostile-bench\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn main() {
    let identities = arg(1, 10_000) as usize;
    let concurrency = arg(2, 6) as usize;
    let hold = Duration::from_millis(arg(3, 50));
    let root = tempfile::tempdir().expect("temporary directory");
    let (vdir, hdir) = (root.path().join("victim"), root.path().join("honest"));
    std::fs::create_dir_all(&vdir).expect("victim directory");
    std::fs::create_dir_all(&hdir).expect("honest directory");
    seed(&vdir);
    let victim = Proc::start(&vdir, &[]);
    let victim_p2p = victim.field("P2P");
    let honest = Proc::start(&hdir, &["-b".into(), victim_p2p.clone()]);
    let honest_udp: SocketAddr = honest.field("UDP").parse().expect("UDP address");
    let vdb = vdir.join("sentrypeer.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(victim.api(), "/peers")["peers_total"].as_u64() != Some(1) {
        assert!(Instant::now() < deadline, "the honest peer did not connect");
        std::thread::park_timeout(Duration::from_millis(100));
    }
    std::thread::park_timeout(Duration::from_secs(3));
    let rows_before = count(&vdb, "SELECT count(*) FROM honey");
    let bytes_before = db_bytes(&vdir);
    let rss_before = victim.vm_hwm_kib();
    println!(
        "victim before: {rows_before} events, {bytes_before} B of database, VmHWM {rss_before} KiB"
    );

    let flood = sybil::Flood {
        identities,
        concurrency,
        requests: 10,
        hold,
        retries: 1_000,
        timeout: Duration::from_secs(120),
    };
    let target = victim_p2p.parse().expect("multiaddr");
    let started = Instant::now();
    let attack = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(sybil::run(target, flood))
    });
    // The honest peer's probes during the attack: time until the victim has stored each.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    let mut latencies = Vec::new();
    let mut lost = 0;
    let mut n = 7_000_000_000u64;
    while !attack.is_finished() {
        n += 1;
        let _ = sock.send_to(&probe(n), honest_udp);
        let sent = Instant::now();
        let sql = format!("SELECT count(*) FROM honey WHERE called_number = '{n}'");
        let mut arrived = false;
        while sent.elapsed() < Duration::from_secs(10) {
            if count(&vdb, &sql) == 1 {
                arrived = true;
                break;
            }
            std::thread::park_timeout(Duration::from_millis(5));
        }
        if arrived {
            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        } else {
            lost += 1;
        }
        std::thread::park_timeout(Duration::from_secs(2));
    }
    let tally = attack.join().expect("attack");
    let elapsed = started.elapsed();
    let health = get_json(victim.api(), "/health-check");
    let rss = victim.vm_hwm_kib();
    let rows_after = count(&vdb, "SELECT count(*) FROM honey");
    let bytes_after = db_bytes(&vdir);
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "identities: {} in {:.1} s ({:.0}/s), concurrency {concurrency}, hold {} ms",
        tally.identities,
        elapsed.as_secs_f64(),
        tally.identities as f64 / elapsed.as_secs_f64(),
        hold.as_millis()
    );
    println!("hostile side: {tally:?}");
    for k in [
        "peer_connections_refused",
        "peer_grace_refused",
        "peer_requests_refused",
        "peer_catch_up_events_served",
        "peer_catch_up_limited",
        "peer_events_accepted",
        "peer_events_rejected",
    ] {
        println!("victim {k}: {}", health["counters"][k]);
    }
    println!(
        "victim after: {rows_after} events (+{}), {bytes_after} B of database (+{}), VmHWM {rss} KiB",
        rows_after - rows_before,
        bytes_after.saturating_sub(bytes_before)
    );
    println!(
        "honest probes during the attack: {} stored, {lost} not within 10 s; p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pct(0.5),
        pct(0.95),
        pct(1.0)
    );
    let _ = Command::new("kill")
        .args(["-TERM", &victim.child.id().to_string()])
        .status();
    let mut victim = victim;
    let _ = victim.child.wait();
    println!(
        "standing rows saved at shutdown: {}",
        count(&vdb, "SELECT count(*) FROM sentrypeer_peer_standing")
    );
    drop(honest);
}
