//! The DNS blocklist, asked with `dig` as a mail server or PBX would: probes over SIP list an
//! address and a number, and the zone answers by RFC 5782 over UDP and TCP.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const ZONE: &str = "bl.example";

/// What `dig` printed: the status and the answer and authority sections' records.
#[derive(Debug)]
struct Dig {
    status: String,
    answer: Vec<String>,
    authority: Vec<String>,
    text: String,
}

impl Dig {
    /// Each answer's data (what follows name, TTL, class and type).
    fn data(&self) -> Vec<String> {
        self.answer
            .iter()
            .map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" "))
            .collect()
    }

    fn ttls(&self) -> Vec<u32> {
        self.answer
            .iter()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect()
    }
}

fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let mut cmd = Command::new("dig");
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+norec", "+time=5", "+tries=1"])
        .args(args);
    let run = run_tool(&mut cmd, Duration::from_secs(30));
    let text = run.stdout;
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_string();
    let section = |name: &str| -> Vec<String> {
        text.split(&format!(";; {name} SECTION:\n"))
            .nth(1)
            .map(|s| {
                s.lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    Dig {
        status,
        answer: section("ANSWER"),
        authority: section("AUTHORITY"),
        text: text.clone(),
    }
}

/// The name of an address under the zone: octets or nibbles reversed (RFC 5782 §2).
fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{ZONE}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let hex: String = v6.octets().iter().map(|b| format!("{b:02x}")).collect();
            let mut name: String = hex.chars().rev().flat_map(|c| [c, '.']).collect();
            name.push_str(ZONE);
            name
        }
    }
}

/// A number's name under `numbers.`: digits reversed one per label, `+` dropped (ENUM).
fn number_name(number: &str) -> String {
    let digits: String = number
        .trim_start_matches('+')
        .chars()
        .rev()
        .flat_map(|c| [c, '.'])
        .collect();
    format!("{digits}numbers.{ZONE}")
}

/// A SIP probe from a chosen local address.
fn probe_from(local: &str, to: SocketAddr, number: &str, branch: u64) {
    let s = UdpSocket::bind(format!("{local}:0")).unwrap();
    s.send_to(&options(number, "friendly-scanner", branch), to)
        .unwrap();
}

/// A DNS query for `name` A, by hand: header (RD set, one question), the name's labels, A, IN.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn listed(d: &Dig) -> bool {
    d.status == "NOERROR" && d.data() == ["127.0.0.2"]
}

fn dnsbl_node(extra: &[&str]) -> Node {
    let mut args = vec!["--dnsbl-listen", "127.0.0.1:0", "--dnsbl-zone", ZONE];
    args.extend_from_slice(extra);
    let node = Node::start(&args);
    assert_eq!(node.dnsbl.len(), 1, "{}", node.log_text());
    node
}

#[test]
fn dnsbl_dig_sees_probed_addresses_and_numbers_by_rfc_5782() {
    require("dig");
    let node = dnsbl_node(&["--udp-listen", "[::1]:0"]);
    let dns = node.dnsbl[0];
    let v4 = node.udp.iter().copied().find(SocketAddr::is_ipv4).unwrap();
    let v6 = node.udp.iter().copied().find(SocketAddr::is_ipv6).unwrap();

    // Probes from 127.0.0.3 (127.0.0.1 is RFC 5782's never-listed entry) and ::1, calling a
    // number with `+` and one without.
    probe_from("127.0.0.3", v4, "+442012345678", 1);
    probe_from("[::1]", v6, "100", 2);
    let me = reversed("127.0.0.3".parse().unwrap());
    let mut last = None;
    let ok = poll(DEFAULT_WAIT, || {
        let d = dig(dns, &[&me, "A"]);
        let hit = listed(&d);
        last = Some(d);
        hit
    });
    assert!(ok, "{:?}\n{}", last, node.log_text());

    // TXT: when last seen and how often.
    let d = dig(dns, &[&me, "TXT"]);
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    let txt = d.data().join(" ");
    assert!(
        txt.starts_with("\"SIP bad actor: last seen 20") && txt.ends_with(", seen 1 time\""),
        "{txt}"
    );
    assert!(d.ttls().iter().all(|t| (1..=60).contains(t)), "{}", d.text);

    // RFC 5782 §5's test entries.
    assert!(listed(&dig(dns, &[&format!("2.0.0.127.{ZONE}"), "A"])));
    let d = dig(dns, &[&format!("1.0.0.127.{ZONE}"), "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
    // The negative answer carries the zone's SOA, with a one-minute minimum (RFC 2308).
    assert_eq!(d.authority.len(), 1, "{}", d.text);
    let soa: Vec<&str> = d.authority[0].split_whitespace().collect();
    assert_eq!(
        &soa[..4],
        [&format!("{ZONE}."), "60", "IN", "SOA"],
        "{}",
        d.text
    );
    assert_eq!(soa.last(), Some(&"60"));

    // IPv6 in nibble form: the probe from ::1.
    let ipv6 = reversed("::1".parse().unwrap());
    let ok = poll(DEFAULT_WAIT, || listed(&dig(dns, &[&ipv6, "A"])));
    assert!(ok, "{ipv6}: {:?}", dig(dns, &[&ipv6, "A"]));

    // Numbers: digits reversed under `numbers.`; the `+` is dropped, so the number dialled as
    // +442012345678 is found as 8.7.6.5.4.3.2.1.0.2.4.4.numbers.
    for number in ["+442012345678", "100"] {
        let name = number_name(number);
        let ok = poll(DEFAULT_WAIT, || listed(&dig(dns, &[&name, "A"])));
        assert!(ok, "{name}: {:?}", dig(dns, &[&name, "A"]));
    }
    let d = dig(dns, &[&number_name("442012345678"), "TXT"]);
    assert!(
        d.data()
            .join(" ")
            .contains("Number dialled by SIP bad actors"),
        "{}",
        d.text
    );
    let d = dig(dns, &[&number_name("+442012345679"), "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
    assert_eq!(d.authority.len(), 1, "{}", d.text);

    // Not listed; a name in the zone that is no address; outside the zone.
    let d = dig(dns, &[&reversed("192.0.2.44".parse().unwrap()), "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
    let d = dig(dns, &[&format!("www.{ZONE}"), "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
    let d = dig(dns, &["3.0.0.127.other.example", "A"]);
    assert_eq!(d.status, "REFUSED", "{}", d.text);
    assert!(d.answer.is_empty());

    // The apex: SOA and NS.
    let d = dig(dns, &[ZONE, "SOA"]);
    assert_eq!(d.status, "NOERROR");
    assert!(d.answer[0].contains("SOA"), "{}", d.text);
    let d = dig(dns, &[ZONE, "NS"]);
    assert_eq!(d.data(), [format!("{ZONE}.")], "{}", d.text);

    // Over TCP, the same answers.
    let d = dig(dns, &["+tcp", &me, "A"]);
    assert!(listed(&d), "{}", d.text);
    let d = dig(dns, &["+tcp", &format!("1.0.0.127.{ZONE}"), "TXT"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);

    // Two queries pipelined on one TCP connection, each behind its 2-byte length: two answers,
    // in order.
    let mut tcp = std::net::TcpStream::connect(dns).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut both = Vec::new();
    for (id, name) in [
        (7u16, format!("2.0.0.127.{ZONE}")),
        (8, format!("1.0.0.127.{ZONE}")),
    ] {
        let q = query(id, &name);
        both.extend_from_slice(&(q.len() as u16).to_be_bytes());
        both.extend_from_slice(&q);
    }
    std::io::Write::write_all(&mut tcp, &both).unwrap();
    for (id, rcode, answers) in [(7u16, 0u8, 1u8), (8, 3, 0)] {
        let mut len = [0u8; 2];
        std::io::Read::read_exact(&mut tcp, &mut len).unwrap();
        let mut a = vec![0u8; usize::from(u16::from_be_bytes(len))];
        std::io::Read::read_exact(&mut tcp, &mut a).unwrap();
        assert_eq!(u16::from_be_bytes([a[0], a[1]]), id);
        assert_eq!((a[3] & 0x0f, a[7]), (rcode, answers), "{a:?}");
    }

    // Garbage: a header promising a question that is not there gets FORMERR; a few bytes get
    // nothing; the server answers on.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.send_to(
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff",
        dns,
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    assert!(n >= 12 && buf[..2] == [0x12, 0x34] && buf[2] & 0x80 != 0);
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
    s.send_to(b"\x00\x01\x02", dns).unwrap();
    assert!(listed(&dig(dns, &[&me, "A"])));

    // Counted in /health-check and /metrics.
    let h = node.health();
    let c = &h["counters"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {h}"));
    assert!(n("dnsbl_queries") >= 18, "{h}");
    assert!(n("dnsbl_listed") >= 8, "{h}");
    assert!(n("dnsbl_nxdomain") >= 5, "{h}");
    assert!(n("dnsbl_refused") >= 1, "{h}");
    assert!(n("dnsbl_malformed") >= 2, "{h}");
    assert_eq!(n("dnsbl_failed"), 0, "{h}");
    let metrics = String::from_utf8(node.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("\nsentrypeer_dnsbl_listed_total ")
            && metrics.contains("\nsentrypeer_dnsbl_nxdomain_total "),
        "{metrics}"
    );
}

#[test]
fn dnsbl_a_listing_ends_with_the_actor_ttl() {
    require("dig");
    // Set through the environment this time.
    let node = Node::start_with(NodeOptions {
        args: vec!["--actor-ttl".into(), "2s".into()],
        envs: vec![
            ("SENTRYPEER_DNSBL_LISTEN", "127.0.0.1:0".into()),
            ("SENTRYPEER_DNSBL_ZONE", ZONE.into()),
        ],
        ..Default::default()
    });
    let dns = node.dnsbl[0];
    probe_from("127.0.0.4", node.udp[0], "200", 7);
    let me = reversed("127.0.0.4".parse().unwrap());
    let ok = poll(DEFAULT_WAIT, || listed(&dig(dns, &[&me, "A"])));
    assert!(ok, "never listed:\n{}", node.log_text());
    // Listed answers are cached no longer than the listing has left.
    let d = dig(dns, &[&me, "A"]);
    assert!(d.ttls().iter().all(|t| *t <= 2), "{}", d.text);
    let ok = poll(DEFAULT_WAIT, || dig(dns, &[&me, "A"]).status == "NXDOMAIN");
    assert!(ok, "still listed: {:?}", dig(dns, &[&me, "A"]));
}

#[test]
fn dnsbl_listen_without_a_valid_zone_exits_2_naming_the_option() {
    for (args, option) in [
        (&["--dnsbl-listen", "127.0.0.1:0"][..], "--dnsbl-zone"),
        (
            &["--dnsbl-listen", "127.0.0.1:0", "--dnsbl-zone", "bad zone"][..],
            "--dnsbl-zone",
        ),
        (
            &["--dnsbl-listen", "localhost:53", "--dnsbl-zone", ZONE][..],
            "--dnsbl-listen",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(bin())
            .args(args)
            .current_dir(dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env_remove("SENTRYPEER_DNSBL_LISTEN")
            .env_remove("SENTRYPEER_DNSBL_ZONE")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(option), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
