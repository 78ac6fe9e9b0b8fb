//! SIGTERM stops intake, drains every output and exits 0 with nothing accepted lost.

use std::net::UdpSocket;

use crate::harness::*;

/// The `key=value` numbers of the node's last log line.
fn final_figure(node: &Node, key: &str) -> i64 {
    let log = node.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("Shutdown complete."))
        .unwrap_or_else(|| panic!("no final line:\n{log}"));
    let at = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len()
        + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

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
    let accepted = final_figure(&node, "events_accepted");
    let dropped = final_figure(&node, "dropped");
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
