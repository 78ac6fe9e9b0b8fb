//! Upstream's OpenDHT network on loopback: Debian's `dhtnode` as the bootstrap node, started by
//! the test on a port it picks itself, and python3-opendht as an upstream node putting and
//! reading values under `bad_actors`. Every wait is a poll with a deadline.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::harness::*;

/// The test peer (python3-opendht), beside the tests.
fn peer_script() -> String {
    format!("{}/tests/opendht_peer.py", env!("CARGO_MANIFEST_DIR"))
}

/// Debian's interpreter, which python3-opendht is installed for.
const PYTHON: &str = "/usr/bin/python3";

/// How long a value may take to cross the DHT on loopback (it takes well under a second).
const DHT_WAIT: Duration = Duration::from_secs(30);

fn have_opendht_tools() -> bool {
    available(
        have("dhtnode")
            && Command::new(PYTHON)
                .args(["-c", "import opendht"])
                .output()
                .is_ok_and(|o| o.status.success()),
        "dhtnode and python3-opendht",
    )
}

/// `dhtnode` on a port of its choosing, which it prints; stopped (stdin closed, then killed)
/// on drop.
struct DhtNode {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
}

impl DhtNode {
    fn start() -> DhtNode {
        let mut child = Command::new("dhtnode")
            .args(["-p", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dhtnode");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(p) = line.split("running on port ").nth(1) {
                    let _ = tx.send(p.trim().parse::<u16>().ok());
                }
            }
        });
        let port = rx
            .recv_timeout(DEFAULT_WAIT)
            .ok()
            .flatten()
            .expect("dhtnode printed its port");
        DhtNode {
            child,
            _stdin: stdin,
            port,
        }
    }
}

impl Drop for DhtNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our node on loopback, joined to `dht` on a port of its own choosing; loopback sources are
/// accepted (every probe here comes from 127.0.0.1).
fn node_on(dht: &DhtNode, extra: &[&str]) -> Node {
    let bootstrap = format!("127.0.0.1:{}", dht.port);
    let mut args = vec![
        "--opendht",
        "--opendht-bootstrap",
        &bootstrap,
        "--opendht-port",
        "0",
        "--p2p-allow-private",
    ];
    args.extend_from_slice(extra);
    let node = Node::start(&args);
    assert!(
        node.log_text().contains("transport=OPENDHT"),
        "no OpenDHT port:\n{}",
        node.log_text()
    );
    node
}

/// A value as upstream's `bad_actor_to_json` writes it: the thirteen fields, bare addresses,
/// the sensor's own address as destination.
fn upstream_value(uuid: &str, node_id: &str, source: &str, number: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    json!({
        "app_name": "sentrypeer",
        "app_version": "v4.0.4",
        "event_timestamp": sentrypeer::event::format_timestamp(UNIX_EPOCH + now - Duration::from_secs(5)),
        "event_uuid": uuid,
        "created_by_node_id": node_id,
        "collected_method": "responsive",
        "transport_type": "UDP",
        "source_ip": source,
        "destination_ip": "198.51.100.20",
        "called_number": number,
        "sip_method": "INVITE",
        "sip_user_agent": "friendly-scanner",
        "sip_message": format!("INVITE sip:{number}@198.51.100.20 SIP/2.0\r\nVia: SIP/2.0/UDP {source}:5060\r\n\r\n"),
    })
    .to_string()
}

/// Runs the python peer to completion: its output.
fn peer(args: &[&str]) -> String {
    run_tool(
        Command::new(PYTHON).arg(peer_script()).args(args),
        DHT_WAIT + Duration::from_secs(15),
    )
    .text()
}

/// The python peer listening on `bad_actors`: each value it is handed, as a JSON line.
struct Listener {
    child: Child,
    stdin: Option<ChildStdin>,
    values: mpsc::Receiver<Value>,
}

impl Listener {
    fn start(dht: &DhtNode) -> Listener {
        let mut child = Command::new(PYTHON)
            .arg(peer_script())
            .args(["listen", &dht.port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the python3-opendht listener");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, values) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let ready = values.recv_timeout(DEFAULT_WAIT).expect("listener ready");
        assert_eq!(ready["ready"], true);
        Listener {
            child,
            stdin,
            values,
        }
    }

    /// The first value whose event has `key` = `want`, within the deadline.
    fn wait_for(&self, key: &str, want: &str) -> Option<(Value, Value)> {
        self.wait_for_within(key, want, DHT_WAIT)
    }

    fn wait_for_within(&self, key: &str, want: &str, wait: Duration) -> Option<(Value, Value)> {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(v) = self.values.recv_timeout(left) else {
                break;
            };
            let data: Value =
                serde_json::from_str(v["data"].as_str().unwrap_or("")).unwrap_or_default();
            if data[key] == want {
                return Some((v, data));
            }
        }
        None
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_value_put_by_an_upstream_node_is_imported_as_an_unsigned_report() {
    if !have_opendht_tools() {
        return;
    }
    let dht = DhtNode::start();
    let node = node_on(&dht, &[]);
    let uuid = uuid::Uuid::new_v4().to_string();
    let upstream_node = uuid::Uuid::new_v4().to_string();
    let value = upstream_value(&uuid, &upstream_node, "45.134.26.12", "00442079460123");
    let put = peer(&["put", &dht.port.to_string(), &value]);
    assert!(put.contains("stored"), "put: {put}");

    let sql = format!("SELECT count(*) FROM honey WHERE event_uuid = '{uuid}'");
    assert!(
        poll(DHT_WAIT, || node.count(&sql) == 1),
        "not imported\n{}",
        node.log_text()
    );
    let (source, number, from, creator, destination): (String, String, String, String, String) =
        node.db()
            .query_row(
                &format!(
                    "SELECT source_ip, called_number, received_from_peer, created_by_node_id,
                     destination_ip FROM honey WHERE event_uuid = '{uuid}'"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
    assert_eq!(source, "45.134.26.12");
    assert_eq!(number, "00442079460123");
    assert_eq!(from, "opendht");
    assert_eq!(creator, upstream_node);
    // The upstream sensor's address is not kept.
    assert_eq!(destination, "0.0.0.0:0");
    assert_eq!(node.counter("opendht_events_accepted"), 1);

    // Unsigned, one unknown author: recorded, but no verdict on its own.
    assert_eq!(node.get("/ip-addresses/45.134.26.12").status, 404);
    assert_eq!(node.get("/numbers/00442079460123").status, 404);

    // The same value again (another put of it) is a duplicate; an invalid one is refused;
    // neither is recorded.
    let again = peer(&["put", &dht.port.to_string(), &value]);
    assert!(again.contains("stored"), "put: {again}");
    let private = upstream_value(
        &uuid::Uuid::new_v4().to_string(),
        &upstream_node,
        "10.1.2.3",
        "100",
    );
    let private = private.replace("10.1.2.3", "999.1.2.3");
    let bad = peer(&["put", &dht.port.to_string(), &private]);
    assert!(bad.contains("stored"), "put: {bad}");
    assert!(
        poll(DHT_WAIT, || node.counter("opendht_values_rejected") >= 1
            && node.counter("opendht_values_duplicate") >= 1),
        "the invalid value or the duplicate not seen\n{}",
        node.log_text()
    );
    assert_eq!(node.count("SELECT count(*) FROM honey"), 1);
}

#[test]
fn an_event_captured_here_is_readable_from_the_dht_in_upstreams_format() {
    if !have_opendht_tools() {
        return;
    }
    let dht = DhtNode::start();
    let node = node_on(&dht, &[]);
    let node_id = node.health()["node_id"].as_str().unwrap().to_string();
    let listener = Listener::start(&dht);

    let sent = Instant::now();
    node.send_udp(&options("5550199", "opendht-test", 77));
    let (got, data) = listener
        .wait_for("called_number", "5550199")
        .unwrap_or_else(|| panic!("no value on the DHT\n{}", node.log_text()));
    let elapsed = sent.elapsed();
    let size = got["size"].as_u64().unwrap();
    eprintln!(
        "OpenDHT propagation (capture -> python3-opendht listener): {} ms, value {} bytes",
        elapsed.as_millis(),
        size
    );

    assert_eq!(got["user_type"], "text/plain");
    let fields: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "app_name",
        "app_version",
        "called_number",
        "collected_method",
        "created_by_node_id",
        "destination_ip",
        "event_timestamp",
        "event_uuid",
        "sip_message",
        "sip_method",
        "sip_user_agent",
        "source_ip",
        "transport_type",
    ];
    want.sort_unstable();
    let mut fields = fields;
    fields.sort_unstable();
    assert_eq!(fields, want, "upstream's thirteen fields: {data}");
    assert_eq!(data["app_name"], "sentrypeer");
    assert_eq!(data["created_by_node_id"], node_id.as_str());
    assert_eq!(data["sip_method"], "OPTIONS");
    assert_eq!(data["sip_user_agent"], "opendht-test");
    assert_eq!(data["transport_type"], "UDP");
    // Our sensor's address never leaves.
    assert!(
        data["destination_ip"]
            .as_str()
            .unwrap()
            .starts_with("0.0.0.0:"),
        "{data}"
    );
    let uuid = data["event_uuid"].as_str().unwrap().to_string();
    // The put does not wait for the database: poll for the row.
    let ours = format!(
        "SELECT count(*) FROM honey WHERE event_uuid = '{uuid}' AND received_from_peer IS NULL"
    );
    assert!(poll(DEFAULT_WAIT, || node.count(&ours) == 1));

    // Stored on the DHT: a fresh upstream node reads it with get().
    let read = peer(&["get", &dht.port.to_string(), &uuid, "20"]);
    let line: Value = serde_json::from_str(read.lines().next().unwrap_or(""))
        .unwrap_or_else(|_| panic!("not read back: {read}"));
    assert_eq!(line["user_type"], "text/plain");
    assert!(poll(DEFAULT_WAIT, || node.counter("opendht_puts_stored") >= 1));

    // Our own value, handed back by the listen, is not imported a second time.
    assert!(
        poll(DEFAULT_WAIT, || node.counter("opendht_values_duplicate")
            >= 1),
        "our own value did not come back\n{}",
        node.log_text()
    );
    assert_eq!(node.count("SELECT count(*) FROM honey"), 1);
    assert_eq!(node.counter("opendht_events_accepted"), 0);
}

#[test]
fn a_quic_listener_on_the_opendht_port_is_exit_2_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args([
            "-p",
            "--opendht",
            "--opendht-port",
            "4999",
            "--p2p-listen",
            "/ip4/127.0.0.1/udp/4999/quic-v1",
        ])
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--opendht-port"), "{err}");
}

#[test]
fn claims_under_many_node_ids_still_count_as_one_author() {
    if !have_opendht_tools() {
        return;
    }
    let dht = DhtNode::start();
    let node = node_on(&dht, &[]);
    for _ in 0..3 {
        let value = upstream_value(
            &uuid::Uuid::new_v4().to_string(),
            &uuid::Uuid::new_v4().to_string(),
            "45.134.26.13",
            "00442079460124",
        );
        let put = peer(&["put", &dht.port.to_string(), &value]);
        assert!(put.contains("stored"), "put: {put}");
    }
    assert!(
        poll(DHT_WAIT, || node.count(
            "SELECT count(*) FROM honey WHERE source_ip = '45.134.26.13'"
        ) == 3),
        "not imported\n{}",
        node.log_text()
    );
    // Three claimed node ids, one unknown author: no verdict at the default corroboration.
    assert_eq!(node.get("/ip-addresses/45.134.26.13").status, 404);
    assert_eq!(node.get("/numbers/00442079460124").status, 404);
}

#[test]
fn the_bridge_puts_a_libp2p_peers_event_and_a_signed_report_corroborates_an_opendht_one() {
    if !have_opendht_tools() {
        return;
    }
    let dht = DhtNode::start();
    let origin = crate::p2p::p2p_node(None, None, &[crate::p2p::LAB]);
    let bootstrap = format!("127.0.0.1:{}", dht.port);
    let bridge = p2p_node_from(
        None,
        &[&origin],
        &[
            crate::p2p::LAB,
            "--opendht",
            "--opendht-bootstrap",
            &bootstrap,
            "--opendht-port",
            "0",
            "--opendht-bridge",
        ],
    );
    crate::p2p::wait_connected(&[&origin, &bridge], 1);

    // An upstream node reports a number: stored on the bridge, no verdict yet.
    let value = upstream_value(
        &uuid::Uuid::new_v4().to_string(),
        &uuid::Uuid::new_v4().to_string(),
        "45.134.26.14",
        "5550123",
    );
    let put = peer(&["put", &dht.port.to_string(), &value]);
    assert!(put.contains("stored"), "put: {put}");
    assert!(
        poll(DHT_WAIT, || crate::p2p::rows_for(&bridge, "5550123") == 1),
        "not imported\n{}",
        bridge.log_text()
    );
    assert_eq!(bridge.get("/numbers/5550123").status, 404);
    let listener = Listener::start(&dht);

    // A libp2p peer sees the same number: its signed report is the second author.
    origin.send_udp(&options("5550123", "bridge-test", 91));
    assert!(
        poll(DEFAULT_WAIT, || crate::p2p::rows_for(&bridge, "5550123")
            == 2),
        "the peer's event did not arrive\n{}",
        bridge.log_text()
    );
    assert!(
        poll(DEFAULT_WAIT, || bridge.get("/numbers/5550123").status
            == 200),
        "two authors should list it"
    );

    // The bridge put the peer's event on OpenDHT, its author's node id kept.
    let (author, from): (String, String) = bridge
        .db()
        .query_row(
            "SELECT created_by_node_id, received_from_peer FROM honey
             WHERE called_number = '5550123' AND received_from_peer != 'opendht'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(from, crate::harness::peer_id(&origin));
    let (got, data) = listener
        .wait_for("sip_user_agent", "bridge-test")
        .unwrap_or_else(|| panic!("the bridge put nothing\n{}", bridge.log_text()));
    assert_eq!(got["user_type"], "text/plain");
    assert_eq!(data["created_by_node_id"], author.as_str());
    assert_ne!(data["created_by_node_id"], bridge.health()["node_id"]);
    assert!(
        data["source_ip"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{data}"
    );

    // What came from OpenDHT is never put back (it would arrive within milliseconds), and
    // nothing is imported twice.
    assert!(
        listener
            .wait_for_within("source_ip", "45.134.26.14:0", Duration::from_secs(3))
            .is_none()
    );
    assert_eq!(crate::p2p::rows_for(&bridge, "5550123"), 2);
}

#[test]
fn an_opendht_port_in_use_is_exit_2_naming_the_option() {
    let held = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run_tool(
        Command::new(bin())
            .args([
                "--udp-listen",
                "127.0.0.1:0",
                "--tcp-listen",
                "127.0.0.1:0",
                "-N",
                "--opendht",
                "--opendht-bootstrap",
                "127.0.0.1:9",
                "--opendht-port",
                &port,
            ])
            .current_dir(dir.path())
            .env("XDG_CONFIG_HOME", dir.path()),
        DEFAULT_WAIT,
    );
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--opendht-port"), "{err}");
}
