//! `sentrypeer-loadgen`: replays realistic SIP probes (OPTIONS, REGISTER, INVITE with varied
//! called numbers and user agents) at a fixed rate over UDP or TCP from many loopback source
//! addresses, and reports what it sent. Also floods junk, and seeds a database for API sizing.
//!
//! Operators use it to size a deployment; `bench/run.sh` uses it for the project's figures.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, Subcommand, ValueEnum};
use sentrypeer::event::{CollectedMethod, Event, Origin, Transport, format_timestamp};

#[derive(Parser)]
#[command(
    name = "sentrypeer-loadgen",
    version,
    about = "Replay SIP probes at a fixed rate, flood junk, or seed a database"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Proto {
    Udp,
    Tcp,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send SIP probes at a fixed rate.
    Send {
        /// Where the honeypot listens.
        #[arg(long, default_value = "127.0.0.1:5060")]
        target: SocketAddr,
        #[arg(long, value_enum, default_value = "udp")]
        transport: Proto,
        /// Probes per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Probes to send in all.
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Source addresses used, 127.0.0.2 upwards (loopback targets only).
        #[arg(long, default_value_t = 64)]
        sources: u32,
        /// The first source address, the others following it: for targets off loopback, from
        /// addresses this host may send from (an `ip route add local 10.0.0.0/8 dev lo` range).
        #[arg(long, value_name = "IP")]
        source_from: Option<IpAddr>,
        /// Distinct called numbers in the mix.
        #[arg(long, default_value_t = 1000)]
        numbers: u64,
        /// Pad each probe with a message body of this many bytes (an SDP of attribute lines):
        /// large messages over TCP.
        #[arg(long, default_value_t = 0)]
        body_bytes: usize,
        /// Send random non-SIP datagrams instead of probes.
        #[arg(long)]
        junk: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write synthetic events straight into a database (for API benchmarks).
    SeedDb {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Distinct called numbers among them.
        #[arg(long, default_value_t = 250_000)]
        numbers: u64,
        /// Distinct source addresses among them.
        #[arg(long, default_value_t = 50_000)]
        addresses: u64,
    },
}

const AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipcli/v1.8",
    "pplsip",
    "VOIP",
    "sipvicious",
    "Z 3.15.40006 rv2.8.20",
    "PortSIP VoIP SDK 11.2",
    "Cisco-SIPGateway/IOS-12.x",
];

/// One realistic probe; `i` varies method, number, agent, Call-ID and branch.
fn probe(i: u64, numbers: u64, transport: &str, body_bytes: usize) -> Vec<u8> {
    let number = format!(
        "{}",
        900_441_000_000u64 + (i.wrapping_mul(2_654_435_761) % numbers.max(1))
    );
    let agent = AGENTS[(i % AGENTS.len() as u64) as usize];
    let (method, extra, mut body) = match i % 3 {
        0 => ("OPTIONS", "Accept: application/sdp\r\n".to_string(), String::new()),
        1 => ("REGISTER", "Contact: <sip:100@198.51.100.9>\r\nExpires: 3600\r\n".into(), String::new()),
        _ => (
            "INVITE",
            "Contact: <sip:100@198.51.100.9>\r\nContent-Type: application/sdp\r\n".into(),
            "v=0\r\no=- 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0 8\r\n".into(),
        ),
    };
    while body.len() < body_bytes {
        let line = "a=x-pad:0123456789abcdef0123456789abcdef0123456789abcdef0123456789\r\n";
        body.push_str(&line[..line.len().min(body_bytes - body.len()).max(2)]);
    }
    format!(
        "{method} sip:{number}@198.51.100.1 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 198.51.100.9:5060;branch=z9hG4bK{i:x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:100@198.51.100.9>;tag={i:x}\r\n\
         To: <sip:{number}@198.51.100.1>\r\n\
         Call-ID: {i:x}@198.51.100.9\r\n\
         CSeq: 1 {method}\r\n\
         User-Agent: {agent}\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn junk(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let len = 16 + (x % 1000) as usize;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Messages prepared before sending, so the send loop does no formatting: at least this many,
/// and one per distinct number (so every number in the mix is sent), within `POOL_BYTES`.
const POOL: u64 = 8192;
const POOL_BYTES: u64 = 256 << 20;

fn main() -> std::process::ExitCode {
    match Args::parse().cmd {
        Cmd::Send {
            target,
            transport,
            rate,
            count,
            sources,
            source_from,
            numbers,
            body_bytes,
            junk: is_junk,
            json,
        } => {
            let t = if transport == Proto::Udp {
                "UDP"
            } else {
                "TCP"
            };
            let each = 600 + body_bytes as u64;
            let size = numbers.clamp(POOL, (POOL_BYTES / each).max(POOL));
            let pool: Vec<Vec<u8>> = (0..size)
                .map(|i| {
                    if is_junk {
                        junk(i)
                    } else {
                        probe(i, numbers, t, body_bytes)
                    }
                })
                .collect();
            let from = Sources {
                count: sources,
                first: source_from,
            };
            match send(target, transport, rate, count, from, &pool) {
                Ok(r) => {
                    if json {
                        println!(
                            "{{\"sent\":{},\"errors\":{},\"seconds\":{:.3},\"rate\":{:.0}}}",
                            r.sent,
                            r.errors,
                            r.secs,
                            r.sent as f64 / r.secs
                        );
                    } else {
                        println!(
                            "sent={} errors={} seconds={:.3} rate={:.0}/s",
                            r.sent,
                            r.errors,
                            r.secs,
                            r.sent as f64 / r.secs
                        );
                    }
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sentrypeer-loadgen: error: {e}");
                    std::process::ExitCode::from(1)
                }
            }
        }
        Cmd::SeedDb {
            db,
            events,
            numbers,
            addresses,
        } => match seed(&db, events, numbers, addresses) {
            Ok(secs) => {
                println!(
                    "seeded={events} numbers={numbers} addresses={addresses} seconds={secs:.1}"
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sentrypeer-loadgen: error: {e}");
                std::process::ExitCode::from(1)
            }
        },
    }
}

struct Report {
    sent: u64,
    errors: u64,
    secs: f64,
}

/// Where probes are sent from.
struct Sources {
    count: u32,
    /// The first address (`--source-from`); `None`: 127.0.0.2 upwards on loopback, else any.
    first: Option<IpAddr>,
}

fn source_ip(i: u32, target: SocketAddr, first: Option<IpAddr>) -> IpAddr {
    if let Some(first) = first {
        return match first {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(i))),
            IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(a).wrapping_add(u128::from(i)),
            )),
        };
    }
    if target.ip().is_loopback() && target.is_ipv4() {
        IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i))
    } else if target.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    }
}

fn send(
    target: SocketAddr,
    transport: Proto,
    rate: u64,
    count: u64,
    from: Sources,
    pool: &[Vec<u8>],
) -> std::io::Result<Report> {
    let sources = from.count.clamp(1, 65_000);
    let mut errors = 0;
    enum Out {
        Udp(UdpSocket),
        Tcp(TcpStream),
    }
    let mut outs = Vec::new();
    for i in 0..sources {
        let local = SocketAddr::new(source_ip(i, target, from.first), 0);
        outs.push(match transport {
            Proto::Udp => {
                let s = UdpSocket::bind(local)?;
                s.connect(target)?;
                Out::Udp(s)
            }
            Proto::Tcp => {
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(target),
                    socket2::Type::STREAM,
                    None,
                )?;
                s.bind(&local.into())?;
                s.connect(&target.into())?;
                s.set_nodelay(true)?;
                Out::Tcp(s.into())
            }
        });
    }
    let start = Instant::now();
    let rate = rate.max(1) as f64;
    let mut sent = 0u64;
    while sent < count {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(count);
        if sent >= due {
            #[allow(clippy::disallowed_methods)] // the generator's own pacing thread, no runtime
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        while sent < due {
            let msg = &pool[(sent % pool.len() as u64) as usize];
            let ok = match &mut outs[(sent % sources as u64) as usize] {
                Out::Udp(s) => s.send(msg).is_ok(),
                Out::Tcp(s) => s.write_all(msg).is_ok(),
            };
            if !ok {
                errors += 1;
            }
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Report { sent, errors, secs })
}

fn seed(db: &std::path::Path, events: u64, numbers: u64, addresses: u64) -> Result<f64, String> {
    let start = Instant::now();
    let opened = sentrypeer::store::open(db).map_err(|e| e.to_string())?;
    let mut writer = opened.writer;
    let now = SystemTime::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..events {
        let number = format!(
            "{}",
            441_000_000_000u64 + (i.wrapping_mul(2_654_435_761) % numbers.max(1))
        );
        let a = (i.wrapping_mul(40_503) % addresses.max(1)) as u32;
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + a);
        let msg = String::from_utf8_lossy(&probe(i, numbers, "UDP", 0)).into_owned();
        batch.push(Arc::new(Event {
            timestamp: format_timestamp(now - Duration::from_millis(events - i)),
            uuid: uuid::Uuid::new_v4(),
            node_id: opened.node_id,
            collected_method: CollectedMethod::Passive,
            transport: Transport::Udp,
            source: SocketAddr::new(IpAddr::V4(ip), 5060),
            destination: "127.0.0.1:5060".parse().map_err(|_| "address")?,
            called_number: number,
            method: "INVITE".into(),
            user_agent: AGENTS[(i % AGENTS.len() as u64) as usize].into(),
            message: msg,
            origin: Origin::Local,
            signed: None,
            sip_auth: None,
            registered_attacker: false,
        }));
        if batch.len() == 10_000 {
            writer.write_batch(&batch).map_err(|e| e.to_string())?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        writer.write_batch(&batch).map_err(|e| e.to_string())?;
    }
    Ok(start.elapsed().as_secs_f64())
}
