//! Hostile input leaves the node running, answering and bounded; nothing but SIP requests is
//! recorded, and what was rejected is counted.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use crate::harness::*;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn responses_nul_bytes_non_utf8_and_huge_datagrams_are_rejected_and_counted() {
    let node = Node::start(&["-r"]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    s.send_to(response, node.udp[0]).unwrap();
    s.send_to(&testdata("rfc4475/unreason.dat"), node.udp[0])
        .unwrap();
    s.send_to(b"\0\0\0\0", node.udp[0]).unwrap();
    s.send_to(b"OPTIONS \0 SIP/2.0\r\n\r\n", node.udp[0])
        .unwrap();
    s.send_to(&[0xff, 0xfe, 0x80, 0x81, b'\r', b'\n'], node.udp[0])
        .unwrap();
    s.send_to(&vec![b'A'; 65_507], node.udp[0]).unwrap();
    let mut big = options("100", "big", 9);
    big.truncate(big.len() - 2); // drop the blank line, pad the headers to the datagram limit
    big.extend_from_slice(b"X-Pad: ");
    big.resize(65_000, b'p');
    big.extend_from_slice(b"\r\n\r\n");
    s.send_to(&big, node.udp[0]).unwrap();
    // A request with non-UTF-8 in its agent is still a request: recorded, bytes replaced.
    let mut odd = options("200", "bad\u{fffd}agent", 10);
    let at = odd
        .windows(3)
        .position(|w| w == "\u{fffd}".as_bytes())
        .unwrap();
    odd.splice(at..at + 3, [0xff]);
    s.send_to(&odd, node.udp[0]).unwrap();
    node.wait_rows(2);
    assert!(poll(DEFAULT_WAIT, || node.counter("messages_received") >= 8));
    assert_eq!(node.counter("rejected_responses"), 2);
    assert!(node.counter("rejected_not_sip") + node.counter("rejected_malformed") >= 4);
    assert_eq!(node.count("SELECT count(*) FROM honey"), 2);
    let ua: String = node
        .db()
        .query_row(
            "SELECT user_agent FROM honey WHERE called_number = '200'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ua, "bad\u{fffd}agent");
    // No reply to anything that is not a SIP request.
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = 0;
    let mut buf = [0u8; 70_000];
    while s.recv(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(got, 2, "only the two requests were answered");
}

#[test]
fn truncated_and_oversized_tcp_messages_close_the_stream_not_the_node() {
    let node = Node::start(&[]);
    // Content-Length larger than what arrives, then the peer goes away.
    {
        let mut s = TcpStream::connect(node.tcp[0]).unwrap();
        s.write_all(&testdata("rfc4475/clerr.dat")).unwrap();
    }
    // A head that never ends.
    {
        let mut s = TcpStream::connect(node.tcp[0]).unwrap();
        let junk = vec![b'a'; 70_000];
        let _ = s.write_all(&junk);
    }
    assert!(
        poll(DEFAULT_WAIT, || node.counter("streams_rejected") >= 2),
        "{}",
        node.health()
    );
    let mut s = TcpStream::connect(node.tcp[0]).unwrap();
    s.write_all(&options("300", "after", 1)).unwrap();
    node.wait_rows(1);
    assert_eq!(node.count("SELECT count(*) FROM honey"), 1);
}

#[test]
fn a_junk_flood_keeps_memory_bounded_and_the_api_answering() {
    let node = Node::start(&[]);
    let before = rss_kib(node.pid());
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut junk = [0u8; 512];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    // Bounded in count: 200,000 datagrams of pseudo-random junk (the bench sends a million).
    for i in 0..200_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        junk[..8].copy_from_slice(&x.to_le_bytes());
        let len = 16 + (x as usize % 496);
        let _ = s.send_to(&junk[..len], node.udp[0]);
        if i % 20_000 == 0 {
            assert_eq!(node.get("/health-check").status, 200);
        }
    }
    // The node may still be working through the flood (its socket buffer full of junk): keep
    // probing until one is recorded, within the deadline.
    let mut attempt = 0;
    let recorded = poll(std::time::Duration::from_secs(60), || {
        attempt += 1;
        node.send_udp(&options("400", "after-flood", attempt));
        poll(std::time::Duration::from_millis(250), || {
            node.count("SELECT count(*) FROM honey") > 0
        })
    });
    assert!(
        recorded,
        "no probe recorded after the flood: {}",
        node.health()
    );
    assert_eq!(
        node.count("SELECT count(*) FROM honey WHERE user_agent != 'after-flood'"),
        0,
        "junk is never recorded"
    );
    assert!(node.counter("rejected_not_sip") > 0);
    let after = rss_kib(node.pid());
    assert!(
        after < 100 * 1024,
        "RSS {after} KiB after the flood (was {before} KiB)"
    );
}

#[test]
fn one_source_cannot_hold_more_than_its_share_of_connections() {
    let node = Node::start(&[]);
    // The per-source limit is 16; hold 20 open and see the surplus refused and counted.
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(node.tcp[0]).unwrap())
        .collect();
    assert!(
        poll(DEFAULT_WAIT, || node.counter("connections_refused") >= 4),
        "{}",
        node.health()
    );
    assert_eq!(node.counter("connections_accepted"), 16);
    drop(held);
    // Once they close, the source may connect again (the node notices the closes in its own time).
    let mut attempt = 0;
    let ok = poll(DEFAULT_WAIT, || {
        attempt += 1;
        if let Ok(mut s) = TcpStream::connect(node.tcp[0]) {
            let _ = s.write_all(&options("500", "again", attempt));
        }
        poll(std::time::Duration::from_millis(200), || {
            node.count("SELECT count(*) FROM honey") > 0
        })
    });
    assert!(ok, "{}", node.health());
}

/// `options(number, agent, branch)` with `from` replaced by `to` (the line must be there).
fn options_edited(number: &str, agent: &str, branch: u64, from: &str, to: &str) -> Vec<u8> {
    let msg = String::from_utf8(options(number, agent, branch)).unwrap();
    assert!(msg.contains(from), "{from:?} not in the probe");
    msg.replace(from, to).into_bytes()
}

#[test]
fn requests_missing_or_contradicting_headers_are_recorded_but_never_answered() {
    let node = Node::start(&["-r"]);
    let bare = b"OPTIONS sip:101@198.51.100.1 SIP/2.0\r\n\r\n".to_vec();
    let no_via = options_edited(
        "102",
        "no-via",
        2,
        "Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-2;rport\r\n",
        "",
    );
    // The request line says INVITE, CSeq says OPTIONS: the request line's method is recorded.
    let mismatch = options_edited("103", "mismatch", 3, "OPTIONS sip:", "INVITE sip:");
    let no_call_id = options_edited("104", "no-call-id", 4, "Call-ID: 4-call\r\n", "");
    let probes = [&bare, &no_via, &mismatch, &no_call_id];
    let sockets: Vec<UdpSocket> = probes.iter().map(|p| node.send_udp(p)).collect();
    // A well-formed probe after them shows the node does answer in this mode.
    let answered = node.send_udp(&options("105", "well-formed", 5));
    node.wait_rows(5);

    let rows: Vec<(String, String, String, String)> = node
        .db()
        .prepare("SELECT called_number, method, user_agent, sip_message FROM honey ORDER BY called_number")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let summary: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(n, m, ua, _)| (n.as_str(), m.as_str(), ua.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("101", "OPTIONS", "NOT_FOUND"),
            ("102", "OPTIONS", "no-via"),
            ("103", "INVITE", "mismatch"),
            ("104", "OPTIONS", "no-call-id"),
            ("105", "OPTIONS", "well-formed"),
        ]
    );
    for ((_, _, _, stored), sent) in rows.iter().zip(probes) {
        assert_eq!(stored.as_bytes(), &sent[..], "recorded exactly as received");
    }
    assert_eq!(node.counter("rejected_malformed"), 0);
    assert_eq!(node.counter("events_malformed"), 4);

    let mut buf = [0u8; 70_000];
    answered
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = answered
        .recv(&mut buf)
        .expect("the well-formed probe is answered");
    assert!(buf[..n].starts_with(b"SIP/2.0 200 "));
    for (s, sent) in sockets.iter().zip(probes) {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            s.recv(&mut buf).is_err(),
            "no reply to {}",
            String::from_utf8_lossy(sent)
        );
    }
}

#[test]
fn the_api_closes_clients_that_never_finish_a_request_and_caps_what_one_source_holds() {
    let node = Node::start(&[]);
    let api = node.api[0];
    let refused = || {
        http_from("127.0.0.2", api, "GET", "/health-check").json()["counters"]
            ["api_connections_refused"]
            .as_u64()
            .unwrap()
    };
    // Half a request head and then silence, and a connection that sends nothing at all.
    let opened = std::time::Instant::now();
    let mut half = TcpStream::connect(api).unwrap();
    half.write_all(b"GET /health-check HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let silent = TcpStream::connect(api).unwrap();
    // One source holding more than its share (64): the surplus is refused and counted, and
    // another source is still served meanwhile.
    let held: Vec<TcpStream> = (0..68).map(|_| TcpStream::connect(api).unwrap()).collect();
    assert!(poll(DEFAULT_WAIT, || refused() >= 6), "{}", refused());
    let r = http_from("127.0.0.2", api, "GET", "/numbers/100");
    assert_eq!(r.status, 404);

    // Every one of them is closed once its time to send a request head is up.
    for mut s in [half, silent].into_iter().chain(held) {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = Vec::new();
        match s.read_to_end(&mut got) {
            Ok(_) => assert!(
                !String::from_utf8_lossy(&got).contains(" 200 "),
                "{}",
                String::from_utf8_lossy(&got)
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    // At the node's 15 s, not at once and not at hyper's default of 30 s.
    let took = opened.elapsed();
    assert!(
        took > Duration::from_secs(12) && took < Duration::from_secs(27),
        "{took:?}"
    );
    // And the source is served again.
    assert_eq!(node.get("/health-check").status, 200);
}
