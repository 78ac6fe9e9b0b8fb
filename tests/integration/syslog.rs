//! The syslog line (`-s`) as fail2ban sees it: the exact RFC 3164 datagram on the socket, then
//! those lines as a syslog daemon writes them, run through fail2ban-regex with the shipped
//! filter. An attacker's User-Agent must never put another address in front of fail2ban.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// fail2ban's own definitions that the shipped filter includes (`before = common.conf`).
const COMMON_CONF: &str = "/etc/fail2ban/filter.d/common.conf";
/// The address a hostile User-Agent tries to get banned instead of the sender.
const FORGED: &str = "6.6.6.6";

/// A SIP request with an optional raw User-Agent value.
fn request(method: &str, number: &str, agent: Option<&[u8]>, branch: u32) -> Vec<u8> {
    let mut m = format!(
        "{method} sip:{number}@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{branch}\r\n\
         From: <sip:attacker@127.0.0.1>;tag={branch}\r\n\
         To: <sip:{number}@127.0.0.1>\r\n\
         Call-ID: syslog-{branch}\r\n\
         CSeq: 1 {method}\r\n"
    )
    .into_bytes();
    if let Some(agent) = agent {
        m.extend_from_slice(b"User-Agent: ");
        m.extend_from_slice(agent);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    m
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 65_536];
    let n = socket
        .recv(&mut buf)
        .expect("a syslog datagram within the wait");
    String::from_utf8(buf[..n].to_vec()).expect("a UTF-8 syslog line")
}

/// The shipped filter beside fail2ban's common.conf, as fail2ban-regex resolves includes from
/// the filter's own directory.
fn filter_dir(dir: &Path) -> PathBuf {
    assert!(
        Path::new(COMMON_CONF).exists(),
        "{COMMON_CONF} missing: is the fail2ban package installed?"
    );
    let filter_d = dir.join("filter.d");
    std::fs::create_dir(&filter_d).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/contrib/fail2ban/filter.d/sentrypeer.conf"
        ),
        filter_d.join("sentrypeer.conf"),
    )
    .unwrap();
    std::os::unix::fs::symlink(COMMON_CONF, filter_d.join("common.conf")).unwrap();
    filter_d.join("sentrypeer.conf")
}

#[test]
fn syslog_lines_name_the_sender_exactly_and_fail2ban_bans_only_the_sender() {
    require("fail2ban-regex");
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("log.sock");
    let syslog = UnixDatagram::bind(&socket_path).unwrap();
    syslog.set_read_timeout(Some(DEFAULT_WAIT)).unwrap();
    let node = Node::start(&["-s", "--syslog-socket", socket_path.to_str().unwrap()]);
    let pid = node.pid();
    let prefix = format!("<13>sentrypeer[{pid}]: ");

    // (transport, method, raw User-Agent, the Agent the line must carry)
    let cases: [(&str, &str, Option<&[u8]>, &str); 7] = [
        (
            "UDP",
            "OPTIONS",
            Some(b"friendly-scanner"),
            "friendly-scanner",
        ),
        (
            "UDP",
            "OPTIONS",
            Some(b"evil Source IP: 6.6.6.6, Method: INVITE, Agent: x"),
            "evil Source IP= 6.6.6.6, Method: INVITE, Agent: x",
        ),
        // A bare CR is legal inside a header value's bytes; it must not reach the log.
        (
            "UDP",
            "OPTIONS",
            Some(b"x\rSource IP: 6.6.6.6"),
            "x?Source IP= 6.6.6.6",
        ),
        // Header folding is the only line break SIP allows in a value; it means one space.
        (
            "UDP",
            "OPTIONS",
            Some(b"x\r\n Source IP: 6.6.6.6, Method: INVITE"),
            "x Source IP= 6.6.6.6, Method: INVITE",
        ),
        ("UDP", "OPTIONS", Some(b"a\tb\x1bc\0d"), "a?b?c?d"),
        ("UDP", "INVITE", None, "NOT_FOUND"),
        ("TCP", "REGISTER", Some(b"sipcli/v1.8"), "sipcli/v1.8"),
    ];

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut lines = Vec::new();
    for (i, (transport, method, agent, expected_agent)) in cases.iter().enumerate() {
        let msg = request(method, &format!("{}", 100 + i), *agent, i as u32);
        let _stream = match *transport {
            "UDP" => {
                udp.send_to(&msg, node.udp[0]).unwrap();
                None
            }
            _ => {
                let mut s = TcpStream::connect(node.tcp[0]).unwrap();
                s.write_all(&msg).unwrap();
                Some(s)
            }
        };
        let line = receive(&syslog);
        assert_eq!(
            line,
            format!("{prefix}Source IP: 127.0.0.1, Method: {method}, Agent: {expected_agent}"),
            "case {i}: {:?}\n{}",
            String::from_utf8_lossy(&msg),
            node.log_text()
        );
        lines.push(line);
    }

    // A bare LF cannot be inside a SIP header value: it ends the line. Whatever the node makes
    // of such a message (an event, or a rejected non-SIP datagram), nothing it logs may hold a
    // line break or a second address. The marker that follows bounds the wait.
    udp.send_to(
        &request("OPTIONS", "200", Some(b"x\nSource IP: 6.6.6.6"), 200),
        node.udp[0],
    )
    .unwrap();
    udp.send_to(
        &request("OPTIONS", "201", Some(b"end-marker"), 201),
        node.udp[0],
    )
    .unwrap();
    loop {
        let line = receive(&syslog);
        assert!(line.starts_with(&prefix), "{line:?}");
        assert!(!line.contains(['\n', '\r']), "{line:?}");
        assert_eq!(line.matches("Source IP:").count(), 1, "{line:?}");
        assert!(
            line.starts_with(&format!("{prefix}Source IP: 127.0.0.1, ")),
            "{line:?}"
        );
        let done = line.ends_with("Agent: end-marker");
        lines.push(line);
        if done {
            break;
        }
    }

    // As a syslog daemon writes them to a file: timestamp, host, then the tagged message.
    let log = dir.path().join("syslog");
    let text: String = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let message = l.strip_prefix("<13>").unwrap();
            format!("Nov 23 11:00:{i:02} honeypot {message}\n")
        })
        .collect();
    std::fs::write(&log, &text).unwrap();
    let filter = filter_dir(dir.path());

    // One banned address per matched line.
    let ips = run_tool(
        Command::new("fail2ban-regex")
            .args(["-o", "ip"])
            .arg(&log)
            .arg(&filter),
        Duration::from_secs(60),
    );
    assert!(ips.status.success(), "{}", ips.text());
    let found: Vec<&str> = ips.stdout.lines().map(str::trim).collect();
    assert_eq!(
        found,
        vec!["127.0.0.1"; lines.len()],
        "every line bans the sender and only the sender:\n{text}\n{}",
        ips.text()
    );

    let summary = run_tool(
        Command::new("fail2ban-regex")
            .arg("--print-all-matched")
            .arg(&log)
            .arg(&filter),
        Duration::from_secs(60),
    );
    assert!(summary.status.success(), "{}", summary.text());
    let n = lines.len();
    assert!(
        summary.stdout.contains(&format!(
            "Lines: {n} lines, 0 ignored, {n} matched, 0 missed"
        )),
        "{}",
        summary.text()
    );
    assert!(!ips.stdout.contains(FORGED), "{}", ips.text());
}

#[test]
fn a_syslog_socket_absent_at_start_counts_failures_and_is_used_once_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("log.sock");
    let path = socket_path.to_str().unwrap();
    let node = Node::start(&["-s", "--syslog-socket", path]);
    let warning = node
        .log_text()
        .lines()
        .find(|l| l.contains("WARN") && l.contains(path) && l.contains("counted as failed"))
        .map(str::to_string);
    assert!(
        warning.is_some(),
        "no startup warning naming {path}:\n{}",
        node.log_text()
    );

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(&request("OPTIONS", "100", Some(b"early"), 1), node.udp[0])
        .unwrap();
    let failed = || {
        node.health()["outputs"]["syslog"]["failed"]
            .as_u64()
            .unwrap()
    };
    assert!(
        poll(DEFAULT_WAIT, || failed() >= 1),
        "{}\n{}",
        node.health()["outputs"],
        node.log_text()
    );
    assert_eq!(node.health()["outputs"]["syslog"]["written"], 0);
    let metrics = String::from_utf8(node.get("/metrics").body).unwrap();
    assert!(
        metrics.contains(&format!(
            "sentrypeer_output_failed_total{{output=\"syslog\"}} {}",
            failed()
        )),
        "{metrics}"
    );

    // The syslog daemon comes up after the node: probes reach it once the node reconnects.
    let syslog = UnixDatagram::bind(&socket_path).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut branch = 2;
    let mut line = None;
    assert!(
        poll(DEFAULT_WAIT, || {
            branch += 1;
            udp.send_to(
                &request("OPTIONS", "101", Some(b"late"), branch),
                node.udp[0],
            )
            .unwrap();
            match syslog.recv(&mut buf) {
                Ok(n) => {
                    line = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                    true
                }
                Err(_) => false,
            }
        }),
        "no line reached the socket once it appeared:\n{}",
        node.log_text()
    );
    assert_eq!(
        line.unwrap(),
        format!(
            "<13>sentrypeer[{}]: Source IP: 127.0.0.1, Method: OPTIONS, Agent: late",
            node.pid()
        )
    );
    // From then on every line is delivered.
    syslog.set_read_timeout(Some(DEFAULT_WAIT)).unwrap();
    let failed_before = failed();
    for i in 0..5 {
        udp.send_to(
            &request(
                "OPTIONS",
                "102",
                Some(format!("after-{i}").as_bytes()),
                1000 + i,
            ),
            node.udp[0],
        )
        .unwrap();
        // A probe of the loop above may have been written after its wait ended.
        let line = std::iter::repeat_with(|| receive(&syslog))
            .find(|l| !l.ends_with("Agent: late"))
            .unwrap();
        assert!(line.ends_with(&format!("Agent: after-{i}")), "{line:?}");
    }
    assert_eq!(failed(), failed_before);
    assert!(poll(
        DEFAULT_WAIT,
        || node.health()["outputs"]["syslog"]["written"]
            .as_u64()
            .unwrap()
            >= 6
    ));
}
