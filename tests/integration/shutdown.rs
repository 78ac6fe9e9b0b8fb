//! SIGTERM stops intake, drains every output and exits 0 with nothing accepted lost.

use std::net::UdpSocket;

use crate::harness::*;

#[test]
fn sigterm_during_a_burst_of_10000_probes_exits_0_with_every_accepted_probe_stored() {
    let mut node = Node::start(&["-j"]);
    let target = node.udp[0];
    let sender = std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..10_000u64 {
            let _ = s.send_to(&options(&format!("{}", 1000 + i % 500), "burst", i), target);
        }
    });
    // Stop it mid-burst: once some probes are in.
    assert!(poll(DEFAULT_WAIT, || node.counter("events_accepted") >= 500));
    let status = node.signal("TERM");
    sender.join().unwrap();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        node.log_text()
    );
    let accepted = node.final_figure("events_accepted");
    let dropped = node.final_figure("dropped");
    assert!(accepted >= 500);
    assert_eq!(dropped, 0);
    let rows = node.count("SELECT count(*) FROM honey");
    assert_eq!(rows, accepted, "every accepted probe is in the database");
    let lines = std::fs::read_to_string(node.path("sentrypeer_json.log"))
        .unwrap()
        .lines()
        .count() as i64;
    assert_eq!(lines, accepted, "and in the JSON log");
    let ok: String = node
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn sigint_on_an_idle_node_exits_0() {
    let mut node = Node::start(&[]);
    assert!(node.signal("INT").success());
}

#[test]
fn sigterm_is_not_held_up_by_clients_that_stall() {
    use std::io::Write;
    let mut node = Node::start(&["-r"]);
    // A TCP client that sends many probes and never reads its replies.
    let mut greedy = std::net::TcpStream::connect(node.tcp[0]).unwrap();
    greedy
        .set_write_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    for i in 0..20_000u64 {
        if greedy.write_all(&options("100", "never-reads", i)).is_err() {
            break;
        }
    }
    // An API client that sends half a request and waits.
    let mut half = std::net::TcpStream::connect(node.api[0]).unwrap();
    half.write_all(b"GET /health-check HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A client that never finishes its SIP message.
    let mut slow = std::net::TcpStream::connect(node.tcp[0]).unwrap();
    slow.write_all(b"OPTIONS sip:100@x SIP/2.0\r\nVia: ")
        .unwrap();
    assert!(poll(DEFAULT_WAIT, || node.counter("events_accepted") > 0));
    let pid = node.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = node.wait_exit(std::time::Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", node.log_text());
    drop((greedy, half, slow));
}
