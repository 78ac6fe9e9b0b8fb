//! The fraud-check agent as a PBX uses it: an INVITE about a call in, `603`/`302`/`404` out,
//! over UDP and TCP, answering only the sources it allows and recording nothing as an attack.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use crate::harness::*;

/// An INVITE a PBX sends about a call to `number` from `caller` (in `X-Source-IP`).
fn check(number: &str, caller: Option<&str>, branch: u32) -> Vec<u8> {
    let source = caller.map_or(String::new(), |c| format!("X-Source-IP: {c}\r\n"));
    format!(
        "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-agent-{branch}\r\n\
         From: <sip:pbx@127.0.0.1>;tag={branch}\r\nTo: <sip:{number}@127.0.0.1>\r\n\
         Call-ID: agent-{branch}\r\nCSeq: 1 INVITE\r\n{source}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn ask_udp(node: &Node, from: &str, msg: &[u8]) -> Option<String> {
    let s = UdpSocket::bind(format!("{from}:0")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.send_to(msg, node.agent[0]).unwrap();
    let mut buf = [0u8; 4096];
    s.recv(&mut buf)
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

/// A probe from `source` to the honeypot, recorded before the agent is asked.
fn probe_from(node: &Node, source: &str, number: &str, branch: u64) {
    let s = UdpSocket::bind(format!("{source}:0")).unwrap();
    s.send_to(&options(number, "friendly-scanner", branch), node.udp[0])
        .unwrap();
}

#[test]
fn the_agent_declines_bad_callers_and_dialled_numbers_and_lets_the_rest_through() {
    let node = Node::start(&["--agent-listen", "127.0.0.1:0"]);
    probe_from(&node, "127.0.0.3", "900442037690000", 1);
    node.wait_rows(1);
    let rows = node.count("SELECT count(*) FROM honey");

    let a = ask_udp(&node, "127.0.0.1", &check("100", Some("127.0.0.3"), 1)).unwrap();
    assert_eq!(status(&a), "603", "{a}");
    assert!(
        a.contains("Reason: SIP;cause=603;text=\"bad actor 127.0.0.3\""),
        "{a}"
    );
    let a = ask_udp(
        &node,
        "127.0.0.1",
        &check("900442037690000", Some("127.0.0.4"), 2),
    )
    .unwrap();
    assert_eq!(status(&a), "603", "{a}");
    assert!(a.contains("text=\"bad number 900442037690000\""), "{a}");
    let a = ask_udp(
        &node,
        "127.0.0.1",
        &check("441234567", Some("127.0.0.4"), 3),
    )
    .unwrap();
    assert_eq!(status(&a), "404", "{a}");
    let options = String::from_utf8(check("agent", None, 4))
        .unwrap()
        .replace("INVITE", "OPTIONS");
    let a = ask_udp(&node, "127.0.0.1", options.as_bytes()).unwrap();
    assert_eq!(status(&a), "200", "{a}");

    // Over TCP, as an SBC with a persistent connection asks.
    let mut t = TcpStream::connect(node.agent_tcp[0]).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    t.write_all(&check("900442037690000", None, 5)).unwrap();
    let mut buf = [0u8; 4096];
    let n = t.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 603 Decline\r\n"));

    // The agent's traffic is not an attack.
    assert_eq!(node.count("SELECT count(*) FROM honey"), rows);
    let agent = &node.health()["agent"];
    assert_eq!(agent["declined"], 3, "{agent}");
    assert_eq!(agent["proceeded"], 1, "{agent}");
    assert_eq!(agent["options"], 1, "{agent}");
}

#[test]
fn with_a_divert_target_bad_calls_are_redirected_and_other_sources_get_no_answer() {
    let node = Node::start(&[
        "--agent-listen",
        "127.0.0.1:0",
        "--agent-divert",
        "sip:ivr@192.0.2.10",
        "--agent-allow",
        "127.0.0.1/32",
    ]);
    probe_from(&node, "127.0.0.3", "100", 1);
    node.wait_rows(1);
    let a = ask_udp(&node, "127.0.0.1", &check("555", Some("127.0.0.3"), 1)).unwrap();
    assert_eq!(status(&a), "302", "{a}");
    assert!(a.contains("\r\nContact: <sip:ivr@192.0.2.10>\r\n"), "{a}");
    // A source the agent does not allow learns nothing, not even that the agent exists.
    assert_eq!(
        ask_udp(&node, "127.0.0.2", &check("555", Some("127.0.0.3"), 2)),
        None
    );
    assert!(poll(DEFAULT_WAIT, || node.health()["agent"]["refused"] == 1));
}
